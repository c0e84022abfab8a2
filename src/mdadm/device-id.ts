/**
 * Which node a member path names, so that two spellings of one device (`u0` and `./u0`, a
 * symlink, a second loop of the same path) are one device. mdadm gets this from the block
 * layer: it opens members O_EXCL (Create.c, Manage.c Manage_subdevs), so a device that is
 * already held fails its second open. Regular files have no O_EXCL, so tsmd compares the node
 * itself: st_rdev for a block device, st_dev + st_ino for a file.
 */
import { statSync } from 'node:fs';

/** A key equal for two paths that name the same device or file; null when it cannot be stat'ed. */
export function deviceIdentity(path: string): string | null {
  try {
    const st = statSync(path, { bigint: true });
    return st.isBlockDevice() ? `b:${st.rdev}` : `f:${st.dev}:${st.ino}`;
  } catch {
    return null;
  }
}

/** Do a and b name the same device (same path, or the same node under two names)? */
export function sameDevice(a: string, b: string): boolean {
  if (a === b) return true;
  const x = deviceIdentity(a);
  return x !== null && x === deviceIdentity(b);
}
