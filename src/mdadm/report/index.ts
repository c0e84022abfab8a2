/**
 * mdadm 4.2's report texts (--examine, --examine --brief/--scan, --examine-bitmap, --detail,
 * --detail --brief) rebuilt from decoded structures, byte for byte.
 */
export {
  countsFromMembers,
  type DetailCounts,
  type DetailInput,
  type DetailMember,
  type DetailSync,
  detailFieldsFromSuperblock,
  enough,
  formatDetail,
  formatDetailBrief,
  type SyncAction,
} from './detail.js';
export {
  type ExamineBriefOptions,
  type ExamineInput,
  examineSpareCount,
  examineSuper1Lines,
  formatExamine,
  formatExamineBrief,
  formatExamineScan,
  printEscape,
  printQuoted,
  versionText,
} from './examine.js';
export {
  type BitmapSlot,
  bitmapBitsBytes,
  bitmapCounts,
  bitmapSlotLocation,
  bitmapSlotLocations,
  type ExamineBitmapInput,
  examineBitmapWarnings,
  formatExamineBitmap,
} from './examine-bitmap.js';
export {
  cFixed1,
  humanChunkSize,
  humanSize,
  humanSizeBrief,
  mdCtime,
  sbSeconds,
} from './human.js';
export { type LoadedSuper1, loadSuper1, unusedSpace } from './super1-view.js';
