/**
 * The simulator's oracle for the data: what a read of each sector may return, given the writes
 * the clients made and when each started and ended. Every sector a write puts down carries the
 * write's id and the sector's address, so a read tells which write it sees.
 *
 * Time is a logical counter (one tick per client operation start or end, and per node death).
 * A write W is a candidate for a read R of a sector when W started before R ended and no write
 * W' superseded it before R started (W' was acknowledged, started after W ended, and ended
 * before R started). A
 * write that failed, or whose node died or was fenced with it in flight, may or may not be on
 * the disk, in part (whole sectors): it stays a candidate, ending when its node can no longer
 * write (death, lease expiry, stop).
 */

export const SECTOR = 512;

export interface WriteRec {
  id: number;
  start: number;
  /** Infinity while in flight or unresolved */
  end: number;
  /** acknowledged to the client: it is on the disks, and supersedes what came before it */
  acked: boolean;
  /** acknowledged and then flushed (or written to disks without a volatile cache): survives a power loss */
  durable: boolean;
}

const INITIAL: WriteRec = { id: 0, start: 0, end: 0, acked: true, durable: true };

/** The contents of one sector of write `id` at array sector `sector`. */
export function fillSector(buf: Uint8Array, at: number, id: number, sector: number): void {
  const v = new DataView(buf.buffer, buf.byteOffset + at, SECTOR);
  v.setUint32(0, id, true);
  v.setUint32(4, sector, true);
  const b = (id * 31 + sector * 7 + 1) & 0xff;
  buf.fill(b, at + 8, at + SECTOR);
}

/** The write id a sector holds (0: never written), or null if it is no write's whole sector. */
export function decodeSector(buf: Uint8Array, at: number, sector: number): number | null {
  const v = new DataView(buf.buffer, buf.byteOffset + at, SECTOR);
  const id = v.getUint32(0, true);
  if (id === 0) {
    for (let i = 0; i < SECTOR; i++) if (buf[at + i] !== 0) return null;
    return 0;
  }
  if (v.getUint32(4, true) !== sector) return null;
  const b = (id * 31 + sector * 7 + 1) & 0xff;
  for (let i = 8; i < SECTOR; i++) if (buf[at + i] !== b) return null;
  return id;
}

export class DataModel {
  private t = 0;
  private readonly hist = new Map<number, WriteRec[]>();
  /** start times of the reads in flight (pruning keeps what they may still see) */
  private readonly readsInFlight = new Map<number, number>();
  private readSeq = 0;

  tick(): number {
    return ++this.t;
  }

  get now(): number {
    return this.t;
  }

  /** A write of sectors [s0, s1) starts. */
  beginWrite(id: number, s0: number, s1: number): WriteRec {
    const w: WriteRec = { id, start: this.tick(), end: Infinity, acked: false, durable: false };
    for (let s = s0; s < s1; s++) {
      let h = this.hist.get(s);
      if (!h) this.hist.set(s, (h = []));
      h.push(w);
    }
    return w;
  }

  /** The write was acknowledged (and is durable at once when the disks have no volatile cache). */
  ackWrite(w: WriteRec, durable: boolean): void {
    if (w.end !== Infinity) return;
    w.acked = true;
    w.durable = durable;
    w.end = this.tick();
  }

  /**
   * A power loss: what was acknowledged but not flushed may be gone, in part or whole, and an
   * older value may show again: it supersedes nothing any more.
   */
  powerLoss(volatile: Iterable<WriteRec>): void {
    for (const w of volatile) if (!w.durable) w.acked = false;
    this.tick();
  }

  /**
   * The write failed or its node died with it in flight, and the node can no longer write any
   * of it: some of its sectors may be on the disks, and it supersedes nothing.
   */
  endWrite(w: WriteRec): void {
    if (w.end === Infinity) w.end = this.tick();
  }

  beginRead(): { key: number; start: number } {
    const key = ++this.readSeq;
    const start = this.tick();
    this.readsInFlight.set(key, start);
    return { key, start };
  }

  /**
   * A read that started at `start` ended now, having seen write `got` in `sector`: is that a
   * value the sector may hold? Returns null if so, else what it could have held.
   */
  endRead(key: number, start: number, sector: number, got: number): number[] | null {
    const end = this.now;
    const h = this.hist.get(sector) ?? [];
    let m = 0;
    for (const w of h) if (w.acked && w.end < start && w.start > m) m = w.start;
    const allowed = (w: WriteRec): boolean => w.start < end && !(w.end < m);
    if (got === 0 ? allowed(INITIAL) : h.some((w) => w.id === got && allowed(w))) return null;
    return [INITIAL, ...h].filter(allowed).map((w) => w.id);
  }

  finishRead(key: number): void {
    this.readsInFlight.delete(key);
    this.tick();
  }

  /** Forget writes no read, in flight or future, can see any more. */
  prune(): void {
    let minStart = this.t + 1;
    for (const s of this.readsInFlight.values()) minStart = Math.min(minStart, s);
    for (const [sector, h] of this.hist) {
      if (h.length < 4) continue;
      let m = 0;
      for (const w of h) if (w.durable && w.end < minStart && w.start > m) m = w.start;
      const keep = h.filter((w) => !(w.end < m));
      if (keep.length !== h.length) this.hist.set(sector, keep);
    }
  }

  /** The sectors ever written (final verification reads them all). */
  writtenSectors(): number[] {
    return [...this.hist.keys()].sort((a, b) => a - b);
  }
}
