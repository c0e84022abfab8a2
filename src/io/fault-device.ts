/**
 * Fault-injecting BlockDevice wrapper, in the spirit of md's "faulty" personality and
 * dm-flakey: read/write errors on chosen byte ranges, transient (the next N matching I/Os
 * fail) or persistent, and a device that vanishes (every I/O fails from then on).
 */
import { TsmdError } from '../errors.js';
import type { BlockDevice } from './block-device.js';

export interface FaultRule {
  op: 'read' | 'write' | 'any';
  /** byte range [startBytes, endBytes) that triggers the fault when an I/O overlaps it */
  startBytes: number;
  endBytes: number;
  /** number of I/Os that fail before the rule disarms; Infinity = persistent */
  count: number;
}

export class FaultyBlockDevice implements BlockDevice {
  readonly inner: BlockDevice;
  private rules: FaultRule[] = [];
  private vanished = false;
  readonly stats = { injectedReadErrors: 0, injectedWriteErrors: 0 };

  constructor(inner: BlockDevice) {
    this.inner = inner;
  }

  get name(): string {
    return this.inner.name;
  }

  get sizeBytes(): number {
    return this.inner.sizeBytes;
  }

  refreshSize(): Promise<number> {
    return this.inner.refreshSize ? this.inner.refreshSize() : Promise.resolve(this.inner.sizeBytes);
  }

  get readOnly(): boolean {
    return this.inner.readOnly;
  }

  get direct(): boolean | undefined {
    return this.inner.direct;
  }

  addFault(rule: FaultRule): void {
    if (!(rule.endBytes > rule.startBytes) || rule.count <= 0) {
      throw new TsmdError('EINVAL', 'fault rule needs a non-empty range and a positive count');
    }
    this.rules.push({ ...rule });
  }

  clearFaults(): void {
    this.rules = [];
  }

  /** From now on every I/O fails, as if the disk was pulled. */
  vanish(): void {
    this.vanished = true;
  }

  restore(): void {
    this.vanished = false;
  }

  private trip(op: 'read' | 'write', off: number, len: number): void {
    if (this.vanished) throw new TsmdError('ENODEV', `${this.name}: device vanished`);
    for (const r of this.rules) {
      if (r.count <= 0) continue;
      if (r.op !== 'any' && r.op !== op) continue;
      if (off < r.endBytes && off + len > r.startBytes) {
        r.count--;
        if (op === 'read') this.stats.injectedReadErrors++;
        else this.stats.injectedWriteErrors++;
        throw new TsmdError('EIO', `${this.name}: injected ${op} error at byte ${off}`);
      }
    }
  }

  async read(buf: Uint8Array, off: number): Promise<void> {
    this.trip('read', off, buf.length);
    await this.inner.read(buf, off);
  }

  async write(buf: Uint8Array, off: number): Promise<void> {
    this.trip('write', off, buf.length);
    await this.inner.write(buf, off);
  }

  async flush(): Promise<void> {
    if (this.vanished) throw new TsmdError('ENODEV', `${this.name}: device vanished`);
    await this.inner.flush();
  }

  async close(): Promise<void> {
    await this.inner.close();
  }
}
