/**
 * A deterministic simulator for md-cluster (TigerBeetle's VOPR is the model): one seed drives
 * everything — the array's shape, 2–4 nodes of one clustered RAID1/RAID10 over shared memory
 * disks, the in-memory DLM, a manual clock, client I/O on every node, node crashes, partitions
 * from the lock manager (lease expiry, self-fencing), stops with hand-over, rejoins, resyncs —
 * and checks the invariants as it goes and at the end. A failing seed replays exactly.
 *
 * Time is discrete-event: every callback that can run runs (promise jobs are drained), then the
 * clock jumps to the next timer. Nothing in md/, raid/ or cluster/ reads real time or real
 * randomness, so a run is a pure function of the seed.
 */
import { MdCluster } from '../cluster/md-cluster/md-cluster.js';
import { MemoryDlmCluster } from '../cluster/dlm/memory.js';
import type { Dlm, JoinOptions, Lockspace } from '../cluster/dlm/types.js';
import { ManualClock } from '../env/clock.js';
import { type Random, SeededRandom } from '../env/random.js';
import { MemoryBlockDevice } from '../io/memory-device.js';
import { MdArray } from '../md/array.js';
import type { ClusterSetup } from '../md/cluster-ops.js';
import { createArray } from '../md/create.js';
import { bitmapLockName } from '../cluster/md-cluster/md-cluster.js';
import { lockspaceName } from '../md/array.js';
import { type DiskOwner, NodeClock, pick, SimDisk } from './disk.js';
import { DataModel, decodeSector, fillSector, SECTOR, type WriteRec } from './model.js';

const MAX_SECTOR = 2n ** 64n - 1n;

export interface SimOptions {
  seed: number;
  /** client and fault actions before the quiescence phase (default 200) */
  steps?: number;
  /** every md log line in the trace (default: warnings and errors only) */
  verbose?: boolean;
  /** fault switches (all on by default) */
  faults?: Partial<FaultSwitches>;
  /**
   * A deliberate bug, to show that the invariants catch it (tests): 'late-fence' has a
   * partitioned node fence itself only after its lease expired, so it writes on while a
   * survivor owns its regions.
   */
  mutation?: 'late-fence';
  /** called with each trace line as it is made (the CLI's --follow) */
  onTrace?: (line: string) => void;
}

export interface FaultSwitches {
  kill: boolean;
  partition: boolean;
  stop: boolean;
  /** a disk latency spike now and then (still below the fence margin) */
  slowDisk: boolean;
  /** the whole cluster loses power (seeds whose disks have a volatile write cache) */
  powerLoss: boolean;
}

export interface SimConfig {
  nodes: number;
  level: 1 | 10;
  raidDisks: number;
  assumeClean: boolean;
  memberMiB: number;
  leaseTtlMs: number;
  fenceMarginMs: number;
  /** the disks have a volatile write cache: flushes matter, a power loss loses what was not flushed */
  writeCache: boolean;
}

export interface SimResult {
  seed: number;
  ok: boolean;
  failure: string | null;
  config: SimConfig;
  trace: string[];
  /** sim time at the end, ms */
  simMs: number;
  stats: SimStats;
}

export interface SimStats {
  writes: number;
  reads: number;
  flushes: number;
  kills: number;
  partitions: number;
  stops: number;
  starts: number;
  syncsRun: number;
  sectorsChecked: number;
  failedOps: number;
}

class Violation extends Error {}

type NodeState = 'joining' | 'up' | 'stopping' | 'fenced' | 'dead' | 'down';

interface ClientOp {
  kind: 'write' | 'read' | 'flush';
  inc: Inc;
  startMs: number;
  w?: WriteRec;
  /** a write's sectors [s0, s1) */
  range?: [number, number];
  abandoned: boolean;
  done: boolean;
}

/** One incarnation of a node: from assemble to its death or stop. */
class Inc implements DiskOwner {
  readonly name: string;
  alive = true;
  expired = false;
  partitioned = false;
  state: NodeState = 'joining';
  array: MdArray | null = null;
  cluster: MdCluster | null = null;
  readonly disks: SimDisk[];
  readonly clock: NodeClock;
  syncRunning = false;
  /** acknowledged writes no flush of this node has covered yet (volatile write caches) */
  readonly unflushed = new Set<WriteRec>();
  /** mismatch counts of the checks this incarnation completed */
  readonly checks: number[] = [];
  readonly ops = new Set<ClientOp>();
  /** writes that failed or were cut short: candidates until the node can no longer write */
  readonly unresolved: WriteRec[] = [];
  slowUntilMs = 0;

  constructor(
    readonly sim: Simulator,
    readonly node: SimNode,
    gen: number,
  ) {
    this.name = `${node.id}#${gen}`;
    this.clock = new NodeClock(sim.clock, () => this.alive);
    this.disks = sim.shared.map((d) => new SimDisk(d.reopen(), this, sim.clock));
  }

  fenceKnown(): boolean {
    return this.array?.fenced != null;
  }

  latencyMs(): number {
    const r = this.sim.rng;
    if (this.sim.clock.nowMs() < this.slowUntilMs) return r.int(20, 200);
    return r.float() < 0.9 ? r.int(0, 3) : r.int(3, 30);
  }

  violation(what: string): void {
    this.sim.fail(what);
  }

  trace(line: string): void {
    this.sim.trace(line);
  }

  /** the node is running md and talks to the DLM: its invariants apply */
  get healthy(): boolean {
    return this.alive && !this.partitioned && this.state === 'up' && this.array !== null && this.array.fenced === null;
  }

  /** A Dlm whose join never completes once the process is dead or cut off. */
  dlm(): Dlm {
    const inner = this.sim.dlm.node(this.node.id);
    return {
      nodeId: inner.nodeId,
      join: (o: JoinOptions): Promise<Lockspace> => (this.alive && !this.partitioned ? inner.join(o) : new Promise<Lockspace>(() => {})),
    };
  }

  /** The node can no longer write: what it left in flight is settled as it is. */
  settleWrites(): void {
    for (const w of this.unresolved.splice(0)) this.sim.model.endWrite(w);
    for (const op of this.ops) {
      op.abandoned = true;
      if (op.w) this.sim.model.endWrite(op.w);
    }
    this.ops.clear();
  }
}

interface SimNode {
  id: string;
  gen: number;
  inc: Inc | null;
  /** the previous incarnation's lease expiry is still to come */
  expiryPending: boolean;
}

export class Simulator {
  readonly rng: Random;
  readonly clock = new ManualClock(0);
  readonly dlm: MemoryDlmCluster;
  readonly model = new DataModel();
  shared: MemoryBlockDevice[] = [];
  readonly config: SimConfig;
  private readonly nodes: SimNode[] = [];
  /** every incarnation so far (a power loss reaches the unflushed writes of dead ones too) */
  private readonly allIncs: Inc[] = [];
  private readonly lines: string[] = [];
  private failure: string | null = null;
  private writeSeq = 0;
  private arraySectors = 0;
  private uuid = new Uint8Array(16);
  private lockspace: string | null = null;
  private readonly steps: number;
  private readonly faults: FaultSwitches;
  readonly stats: SimStats = { writes: 0, reads: 0, flushes: 0, kills: 0, partitions: 0, stops: 0, starts: 0, syncsRun: 0, sectorsChecked: 0, failedOps: 0 };

  constructor(private readonly opts: SimOptions) {
    this.rng = new SeededRandom(opts.seed);
    this.dlm = new MemoryDlmCluster({ clock: this.clock });
    this.steps = opts.steps ?? 200;
    this.faults = { kill: true, partition: true, stop: true, slowDisk: true, powerLoss: true, ...opts.faults };
    const r = this.rng;
    const level: 1 | 10 = r.float() < 0.5 ? 1 : 10;
    const ttl = 3000;
    const nodes = r.int(2, 5);
    const raidDisks = level === 1 ? r.int(2, 4) : r.int(2, 5);
    const assumeClean = r.float() < 0.7;
    // small members are cheap; the larger one spans two raid1 windows (32 MiB) and several raid10 ones (16 MiB)
    const memberMiB = pick(r, [8, 16, 16, 40]);
    // (the memory disks' cache keeps a map entry per sector: not on the large members, for speed)
    const writeCache = r.float() < 0.5 && memberMiB <= 16;
    this.config = {
      nodes,
      level,
      raidDisks,
      assumeClean,
      memberMiB,
      leaseTtlMs: ttl,
      // docs/cluster.md: the node fences itself max(0.5 s, TTL/5) before its lease can expire
      fenceMarginMs: Math.max(500, ttl / 5),
      writeCache,
    };
    for (let i = 1; i <= this.config.nodes; i++) this.nodes.push({ id: `n${i}`, gen: 0, inc: null, expiryPending: false });
  }

  // ---- trace and failure ----

  trace(line: string): void {
    const l = `[${String(this.clock.nowMs()).padStart(7)}ms] ${line}`;
    this.lines.push(l);
    this.opts.onTrace?.(l);
  }

  fail(what: string): void {
    if (this.failure !== null) return;
    this.failure = what;
    this.trace(`VIOLATION: ${what}`);
  }

  private check(): void {
    if (this.failure !== null) throw new Violation(this.failure);
  }

  // ---- the run ----

  async run(): Promise<SimResult> {
    const c = this.config;
    this.trace(`seed ${this.opts.seed}: ${c.nodes} nodes, raid${c.level} of ${c.raidDisks} x ${c.memberMiB} MiB${c.assumeClean ? ' (assume-clean)' : ''}${c.writeCache ? ', volatile write caches' : ''}, lease ${c.leaseTtlMs} ms, fence margin ${c.fenceMarginMs} ms`);
    try {
      await this.create();
      await this.chaos();
      await this.quiesce();
      await this.verifyEnd();
    } catch (e) {
      if (!(e instanceof Violation)) this.fail(`unexpected exception: ${(e as Error).stack ?? String(e)}`);
    }
    const ok = this.failure === null;
    return { seed: this.opts.seed, ok, failure: this.failure, config: c, trace: this.lines, simMs: this.clock.nowMs(), stats: this.stats };
  }

  private async create(): Promise<void> {
    const c = this.config;
    const r = this.rng;
    // a power loss keeps each unflushed sector write with probability 1/2, drawn from the seed
    const writeCache = c.writeCache ? { random: r, keepFraction: 0.5 } : undefined;
    this.shared = Array.from({ length: c.raidDisks }, (_, i) => new MemoryBlockDevice(`d${i}`, c.memberMiB << 20, { writeCache }));
    r.fill(this.uuid);
    const devUuids = this.shared.map(() => {
      const u = new Uint8Array(16);
      r.fill(u);
      return u;
    });
    await createArray(
      this.shared.map((d) => d.reopen()),
      {
        level: c.level,
        raidDisks: c.raidDisks,
        metadata: '1.2',
        layout: c.level === 10 ? 0x102 : undefined,
        chunkKiB: c.level === 10 ? 64 : undefined,
        setName: 'sim:0',
        uuid: this.uuid,
        deviceUuids: devUuids,
        bitmap: 'clustered',
        nodes: 4,
        clusterName: 'sim',
        bitmapChunkBytes: 64 * 1024,
        assumeClean: c.assumeClean,
        nowSeconds: 1_700_000_000,
        members: this.shared.map((d) => ({ sizeSectors: Math.floor(d.sizeBytes / 512) })),
      },
      { confirmOverwrite: async () => false, initialSync: false, clock: this.clock },
    );
  }

  /** Run promise jobs until none is left (memory I/O and the DLM complete through them). */
  private async drain(): Promise<void> {
    await new Promise<void>((r) => setImmediate(r));
    await new Promise<void>((r) => setImmediate(r));
  }

  /** Run what can run, then check the invariants. */
  private async settle(): Promise<void> {
    await this.drain();
    this.check();
    this.continuous();
    this.check();
  }

  /** One event: run what can run, check, jump to the next timer. Returns false if no timer is left. */
  private async step(): Promise<boolean> {
    await this.settle();
    return this.jump();
  }

  private jump(): boolean {
    const next = this.clock.nextDueMs();
    if (next === null) return false;
    this.clock.advance(Math.max(0, next - this.clock.nowMs()));
    return true;
  }

  private async chaos(): Promise<void> {
    // every node assembles at the start, one after the other at random moments
    for (const n of this.nodes) this.clock.setTimer(this.rng.int(0, 50), () => this.start(n));
    let actions = 0;
    const tick = (): void => {
      if (actions >= this.steps) return;
      actions++;
      this.act();
      this.clock.setTimer(this.rng.int(1, 60), tick);
    };
    this.clock.setTimer(this.rng.int(30, 80), tick);
    while (actions < this.steps) {
      if (!(await this.step())) this.fail('no timer left while the simulation runs (nothing can make progress)');
    }
  }

  // ---- actions ----

  private act(): void {
    const r = this.rng;
    // a partitioned node's clients go on until its fence: they do not know
    const serving = this.nodes.filter((n) => n.inc?.state === 'up' && n.inc.alive && n.inc.array?.fenced === null);
    const up = serving.filter((n) => !n.inc!.partitioned);
    const down = this.nodes.filter((n) => n.inc === null && !n.expiryPending);
    const f = this.faults;
    const choices: Array<[number, () => void]> = [];
    if (serving.length > 0) {
      choices.push([40, () => this.clientWrite(pick(r, serving).inc!)]);
      choices.push([25, () => this.clientRead(pick(r, serving).inc!)]);
      choices.push([6, () => this.clientFlush(pick(r, serving).inc!)]);
    }
    if (up.length > 0) {
      if (f.kill) choices.push([2, () => this.kill(pick(r, up))]);
      if (f.partition) choices.push([1.5, () => this.partition(pick(r, up))]);
      if (f.stop) choices.push([2, () => this.stop(pick(r, up))]);
      if (f.slowDisk) choices.push([1, () => this.slow(pick(r, up).inc!)]);
      if (f.powerLoss && this.config.writeCache) choices.push([0.7, () => this.powerLoss()]);
    }
    if (down.length > 0) choices.push([up.length === 0 ? 50 : 6, () => this.start(pick(r, down))]);
    if (choices.length === 0) return;
    const total = choices.reduce((s, [w]) => s + w, 0);
    let x = r.float() * total;
    for (const [w, fn] of choices) {
      x -= w;
      if (x < 0) {
        fn();
        return;
      }
    }
    choices[choices.length - 1]![1]();
  }

  private start(n: SimNode): void {
    if (n.inc !== null || n.expiryPending) return;
    n.gen++;
    const inc = new Inc(this, n, n.gen);
    n.inc = inc;
    this.allIncs.push(inc);
    this.stats.starts++;
    this.trace(`${inc.name}: assemble`);
    const setup: ClusterSetup = {
      clusterName: 'sim',
      create: (info, host) => (inc.cluster = new MdCluster({ dlm: inc.dlm(), clock: inc.clock, info, host })),
    };
    const log = (m: string, level?: string): void => {
      if (!inc.alive) return;
      if (this.opts.verbose || level === 'warn' || level === 'error') this.trace(`  ${inc.name} ${level ?? 'info'}: ${m}`);
    };
    MdArray.assemble(inc.disks, { run: true, clock: inc.clock, cluster: setup, log, syncLimits: { minKiBs: 20_000, maxKiBs: 400_000 } }).then(
      (a) => {
        if (!inc.alive) return;
        inc.array = a;
        a.sync.onEvent = (ev) => {
          if (ev.type === 'finished' && ev.kind === 'check' && ev.result) inc.checks.push(ev.result.mismatches);
          this.onSync(inc, ev.type, ev.kind);
        };
        if (inc.state === 'joining') {
          inc.state = 'up';
          this.trace(`${inc.name}: up, slot ${a.cluster!.slotNumber()}`);
          a.startBackground();
        }
      },
      (e: unknown) => {
        if (!inc.alive) return;
        this.trace(`${inc.name}: assemble failed: ${(e as Error).message}`);
        if (!inc.partitioned && !/EFENCED|fenced|lost its cluster/.test(String((e as Error).message)))
          this.fail(`${inc.name}: assemble failed on a healthy node: ${(e as Error).message}`);
        inc.state = 'down';
        inc.settleWrites();
        if (n.inc === inc && !inc.partitioned) n.inc = null;
      },
    );
  }

  private onSync(inc: Inc, type: string, kind: string): void {
    this.trace(`${inc.name}: ${kind} ${type}`);
    if (type === 'started') {
      this.stats.syncsRun++;
      // at most one node syncs at a time (the resync lock; spec §8 #5)
      for (const n of this.nodes) {
        const o = n.inc;
        if (o && o !== inc && o.syncRunning && o.alive && o.array?.fenced === null && o.state !== 'down')
          this.fail(`${inc.name} started a ${kind} while ${o.name} still syncs`);
      }
      inc.syncRunning = true;
    } else inc.syncRunning = false;
  }

  private nextWriteRange(): [number, number] {
    const r = this.rng;
    const total = this.arraySectorsNow();
    let len = r.float() < 0.85 ? r.int(1, 65) : r.int(65, 513);
    // hot spots: the start, the 16/32 MiB window boundaries, the end; now and then anywhere
    const spots = [0, 16 * 2048, 32 * 2048, total - 2048];
    let s0: number;
    if (r.float() < 0.8) s0 = Math.max(0, pick(r, spots) + r.int(-1024, 1024));
    else s0 = r.int(0, total);
    if (r.float() < 0.3) s0 -= s0 % 8;
    s0 = Math.min(Math.max(0, s0), total - 1);
    len = Math.min(len, total - s0);
    return [s0, s0 + len];
  }

  /** Does a client write in flight on some node (alive or not yet settled) overlap [s0, s1)? */
  private writeInFlight(s0: number, s1: number): boolean {
    for (const n of this.nodes) {
      for (const op of n.inc?.ops ?? []) if (op.range && op.range[0] < s1 && op.range[1] > s0) return true;
    }
    return false;
  }

  private arraySectorsNow(): number {
    if (this.arraySectors === 0) {
      for (const n of this.nodes) if (n.inc?.array) this.arraySectors = n.inc.array.sizeBytes / SECTOR;
    }
    return this.arraySectors;
  }

  private begin(inc: Inc, kind: ClientOp['kind']): ClientOp {
    const op: ClientOp = { kind, inc, startMs: this.clock.nowMs(), abandoned: false, done: false };
    inc.ops.add(op);
    return op;
  }

  /** An operation failed: allowed only where the node is losing its membership or stopping. */
  private opFailed(op: ClientOp, e: unknown): void {
    const inc = op.inc;
    this.stats.failedOps++;
    const msg = (e as Error).message;
    this.trace(`${inc.name}: ${op.kind} failed: ${msg}`);
    if (inc.state === 'up' && inc.alive && !inc.partitioned && inc.array?.fenced === null && !/EFENCED|lost its cluster/.test(msg))
      this.fail(`${inc.name}: a client ${op.kind} failed on a healthy node: ${msg}`);
  }

  private clientWrite(inc: Inc): void {
    const a = inc.array!;
    if (inc.ops.size >= 6) return;
    // Overlapping writes in flight at the same time are the application's race: md orders
    // neither them nor their copies, so mirrors may legitimately end up different (md's check
    // counts such regions too). A cluster file system never issues them; neither do we.
    let range: [number, number] | null = null;
    for (let tries = 0; tries < 8 && range === null; tries++) {
      const r = this.nextWriteRange();
      if (!this.writeInFlight(r[0], r[1])) range = r;
    }
    if (range === null) return;
    const [s0, s1] = range;
    const id = ++this.writeSeq;
    const buf = new Uint8Array((s1 - s0) * SECTOR);
    for (let s = s0; s < s1; s++) fillSector(buf, (s - s0) * SECTOR, id, s);
    const op = this.begin(inc, 'write');
    op.range = range;
    op.w = this.model.beginWrite(id, s0, s1);
    this.stats.writes++;
    this.trace(`${inc.name}: write #${id} sectors ${s0}-${s1}`);
    a.write(buf, s0 * SECTOR).then(
      () => {
        if (op.abandoned) return;
        inc.ops.delete(op);
        this.model.ackWrite(op.w!, !this.config.writeCache);
        if (this.config.writeCache) inc.unflushed.add(op.w!);
        this.trace(`${inc.name}: write #${id} acknowledged`);
      },
      (e: unknown) => {
        if (op.abandoned) return;
        inc.ops.delete(op);
        inc.unresolved.push(op.w!);
        this.opFailed(op, e);
      },
    );
  }

  private clientRead(inc: Inc, range?: [number, number]): Promise<void> {
    const a = inc.array!;
    if (!range && inc.ops.size >= 6) return Promise.resolve();
    const [s0, s1] = range ?? this.nextWriteRange();
    const buf = new Uint8Array((s1 - s0) * SECTOR);
    const op = this.begin(inc, 'read');
    const rd = this.model.beginRead();
    this.stats.reads++;
    if (!range) this.trace(`${inc.name}: read sectors ${s0}-${s1}`);
    return a.read(buf, s0 * SECTOR).then(
      () => {
        if (op.abandoned) return this.model.finishRead(rd.key);
        inc.ops.delete(op);
        // the read's end: a write that started before now may be what it saw
        this.model.tick();
        for (let s = s0; s < s1; s++) {
          const got = decodeSector(buf, (s - s0) * SECTOR, s);
          this.stats.sectorsChecked++;
          if (got === null) {
            this.fail(`${inc.name}: read of sector ${s} returned bytes no write put there`);
            break;
          }
          const bad = this.model.endRead(rd.key, rd.start, s, got);
          if (bad) {
            this.fail(`${inc.name}: read of sector ${s} returned write #${got}; it may only hold one of #${bad.join(', #')}`);
            break;
          }
        }
        this.model.finishRead(rd.key);
      },
      (e: unknown) => {
        this.model.finishRead(rd.key);
        if (op.abandoned) return;
        inc.ops.delete(op);
        this.opFailed(op, e);
      },
    );
  }

  private clientFlush(inc: Inc): void {
    const a = inc.array!;
    const op = this.begin(inc, 'flush');
    this.stats.flushes++;
    // the writes acknowledged before the flush began are durable once it returns
    // (still volatile until the flush returns: a power loss before then may lose them)
    const covered = [...inc.unflushed];
    this.trace(`${inc.name}: flush${covered.length > 0 ? ` (covers #${covered.map((w) => w.id).join(', #')})` : ''}`);
    a.flush().then(
      () => {
        for (const w of covered) {
          w.durable = true;
          inc.unflushed.delete(w);
        }
        if (covered.length > 0) this.trace(`${inc.name}: flush done`);
        if (!op.abandoned) inc.ops.delete(op);
      },
      (e: unknown) => {
        if (op.abandoned) return;
        inc.ops.delete(op);
        this.opFailed(op, e);
      },
    );
  }

  private slow(inc: Inc): void {
    inc.slowUntilMs = this.clock.nowMs() + this.rng.int(50, 400);
    this.trace(`${inc.name}: disk latency spike until ${inc.slowUntilMs} ms`);
  }

  /** The host dies: its I/O in flight lands or not, its lease expires a TTL later. */
  private kill(n: SimNode): void {
    const inc = n.inc!;
    this.stats.kills++;
    this.trace(`${inc.name}: KILL`);
    inc.alive = false;
    inc.state = 'dead';
    this.dlm.partition(n.id);
    for (const d of inc.disks) d.kill(() => this.rng.float() < 0.5);
    inc.settleWrites();
    this.model.tick();
    n.inc = null;
    this.expireLater(n, inc);
  }

  /**
   * The whole cluster loses power: every node dies (its writes in flight reach the disk caches
   * or not), then every disk loses what its cache held unflushed (each sector write kept or
   * not). Acknowledged writes no flush covered may be gone; the leases expire a TTL later.
   */
  private powerLoss(): void {
    this.stats.kills++;
    this.trace('POWER LOSS of the whole cluster');
    for (const n of this.nodes) if (n.inc && n.inc.alive) this.kill(n);
    for (const d of this.shared) {
      const k = d.crash();
      if (k.keptSectors + k.lostSectors > 0) this.trace(`  ${d.name}: ${k.keptSectors} unflushed sector writes reached the media, ${k.lostSectors} lost`);
    }
    const volatile: WriteRec[] = [];
    for (const n of this.nodes) {
      for (const i of this.incarnationsOf(n)) {
        volatile.push(...i.unflushed);
        i.unflushed.clear();
      }
    }
    this.model.powerLoss(volatile);
  }

  private incarnationsOf(n: SimNode): Inc[] {
    return this.allIncs.filter((i) => i.node === n);
  }

  private expireLater(n: SimNode, inc: Inc): void {
    n.expiryPending = true;
    this.clock.setTimer(this.config.leaseTtlMs, () => {
      inc.expired = true;
      n.expiryPending = false;
      if (this.dlm.isMember(n.id)) {
        this.trace(`${inc.name}: lease expired: the DLM purges its locks`);
        this.dlm.crash(n.id);
      }
    });
  }

  /**
   * The node loses the lock manager (the lease is not renewed): it fences itself a margin
   * before the lease can expire; the DLM purges its locks at expiry; then it is stopped.
   */
  private partition(n: SimNode): void {
    const inc = n.inc!;
    this.stats.partitions++;
    this.trace(`${inc.name}: PARTITION from the DLM`);
    inc.partitioned = true;
    this.dlm.partition(n.id);
    const late = this.opts.mutation === 'late-fence';
    const fenceAt = this.config.leaseTtlMs + (late ? 1 : -1) * this.config.fenceMarginMs;
    this.clock.setTimer(fenceAt, () => {
      if (!inc.alive) return; // killed meanwhile: a dead node fences nothing
      this.trace(`${inc.name}: fences itself (lease about to expire)`);
      this.dlm.fence(n.id);
      if (inc.array && inc.array.fenced === null) this.fail(`${inc.name}: its md did not learn of its fence`);
    });
    this.clock.setTimer(this.config.leaseTtlMs, () => {
      inc.expired = true;
      this.trace(`${inc.name}: lease expired: the DLM purges its locks`);
      if (this.dlm.isMember(n.id)) this.dlm.crash(n.id);
    });
    // once fenced and expired, the operator stops the array (it writes nothing)
    this.clock.setTimer(Math.max(fenceAt, this.config.leaseTtlMs) + 1, () => {
      if (!inc.alive) return;
      inc.settleWrites();
      this.model.tick();
      const a = inc.array;
      inc.state = 'stopping';
      void (a ? a.close() : Promise.resolve()).then(
        () => {
          inc.state = 'down';
          this.trace(`${inc.name}: fenced array stopped`);
          if (n.inc === inc) n.inc = null;
        },
        (e: unknown) => this.fail(`${inc.name}: stopping the fenced array failed: ${(e as Error).message}`),
      );
    });
  }

  /**
   * mdadm --stop: the node's clients go away first (their requests in flight finish: md refuses
   * to stop an array that is open), then the array stops and leaves the cluster, handing
   * unfinished work over.
   */
  private stop(n: SimNode): void {
    const inc = n.inc!;
    this.stats.stops++;
    this.trace(`${inc.name}: STOP`);
    inc.state = 'stopping';
    const close = (): void => {
      if (!inc.alive) return;
      if (inc.ops.size > 0) {
        this.clock.setTimer(1, close);
        return;
      }
      inc.array!.close().then(
        () => {
          inc.settleWrites();
          this.model.tick();
          inc.state = 'down';
          inc.syncRunning = false;
          this.trace(`${inc.name}: stopped`);
          if (n.inc === inc) n.inc = null;
        },
        (e: unknown) => {
          if (inc.alive) this.fail(`${inc.name}: stop failed: ${(e as Error).message}`);
        },
      );
    };
    close();
  }

  // ---- invariants checked after every event ----

  private continuous(): void {
    const now = this.clock.nowMs();
    for (const n of this.nodes) {
      const inc = n.inc;
      if (!inc || !inc.healthy) continue;
      // bounded waits: no client request of a healthy node waits for ever (2 x md's DLM timeout)
      for (const op of inc.ops) {
        if (now - op.startMs > 75_000) this.fail(`${inc.name}: a client ${op.kind} has waited ${now - op.startMs} ms (deadlock?)`);
      }
      // spec §8 #6: each live node holds PW on its own bitmap lock
      const c = inc.cluster;
      if (c && inc.array && !c.fencedNow) {
        this.lockspace ??= lockspaceName(this.uuid);
        const st = this.dlm.resourceState(this.lockspace, bitmapLockName(c.slotNumber()));
        const mine = st?.grant.filter((e) => e.node === n.id && e.gr === 4) ?? [];
        if (mine.length !== 1) this.fail(`${inc.name}: holds ${mine.length} PW locks on its own bitmap slot ${c.slotNumber()}`);
      }
    }
    if (this.model.now % 64 === 0) this.model.prune();
  }

  // ---- the end: quiescence, convergence, verification ----

  private healthyNodes(): Inc[] {
    return this.nodes.map((n) => n.inc).filter((i): i is Inc => i !== null && i.healthy);
  }

  private async runUntil(what: string, cond: () => boolean, limitMs: number): Promise<void> {
    const end = this.clock.nowMs() + limitMs;
    for (;;) {
      await this.settle();
      if (cond()) return;
      if (this.clock.nowMs() > end) {
        this.fail(`no progress: ${what} not reached within ${limitMs} ms of simulated time; ${this.describe()}`);
        this.check();
      }
      if (!this.jump()) {
        this.fail(`deadlock: ${what} not reached and no timer is left; ${this.describe()}`);
        this.check();
      }
    }
  }

  private describe(): string {
    return this.nodes
      .map((n) => {
        const i = n.inc;
        if (!i) return `${n.id}: down${n.expiryPending ? ' (lease expiry pending)' : ''}`;
        const a = i.array;
        const s = a?.sync;
        return `${i.name}: ${i.state}${i.partitioned ? ' partitioned' : ''} ops=${[...i.ops].map((o) => o.kind).join('+') || 0} sync=${s?.current?.kind ?? (s?.busy ? 'busy' : 'idle')}${a?.syncPendingCluster ? ' PENDING' : ''} remote=${a?.remoteSync ?? '-'} resyncCp=${a ? (a.resyncCp === MAX_SECTOR ? 'max' : String(a.resyncCp)) : '-'}`;
      })
      .join('; ');
  }

  private settled(): boolean {
    if (this.nodes.some((n) => n.expiryPending || (n.inc !== null && !n.inc.healthy))) return false;
    const hs = this.healthyNodes();
    if (hs.length === 0) return false;
    return hs.every((i) => {
      const a = i.array!;
      return i.ops.size === 0 && !a.sync.busy && !a.syncPendingCluster && a.resyncCp === MAX_SECTOR && a.remoteSync === null && !a.degraded;
    });
  }

  private async quiesce(): Promise<void> {
    this.trace('--- quiescence: no more faults; every node rejoins; waiting for the resyncs');
    const limit = 240_000;
    const end = this.clock.nowMs() + limit;
    // bring every node back (a stopped or crashed one assembles again once its lease is gone)
    for (;;) {
      await this.settle();
      if (this.settled()) break;
      for (const n of this.nodes) if (n.inc === null && !n.expiryPending) this.start(n);
      if (this.clock.nowMs() > end) {
        this.fail(`no progress: the cluster did not settle within ${limit} ms of simulated time; ${this.describe()}`);
        this.check();
      }
      if (!this.jump()) {
        this.fail(`deadlock: the cluster did not settle and no timer is left; ${this.describe()}`);
        this.check();
      }
    }
    // let any last bitmap daemon pass and message go by
    const until = this.clock.nowMs() + 2000;
    await this.runUntil('a quiet moment', () => this.clock.nowMs() >= until, 10_000);
    await this.runUntil('the cluster settled again', () => this.settled(), 120_000);
  }

  private async verifyEnd(): Promise<void> {
    const hs = this.healthyNodes();
    // all mirrors equal: a check from one node finds no mismatch
    const checker = pick(this.rng, hs);
    this.trace(`${checker.name}: check`);
    const a = checker.array!;
    const before = checker.checks.length;
    await a.setSyncAction('check');
    await this.runUntil('the check finished', () => !a.sync.busy && checker.checks.length > before, 240_000);
    const mismatches = checker.checks[before]!;
    this.trace(`${checker.name}: check done, mismatch_cnt ${mismatches}`);
    if (mismatches !== 0) this.fail(`after quiescence and resync the mirrors differ: mismatch_cnt ${mismatches}`);
    this.check();
    // every written sector reads back, the same from every node
    const sectors = this.model.writtenSectors();
    for (const i of hs) {
      for (let k = 0; k < sectors.length;) {
        let e = k + 1;
        while (e < sectors.length && sectors[e] === sectors[e - 1]! + 1 && e - k < 512) e++;
        await this.pumpRead(i, [sectors[k]!, sectors[e - 1]! + 1]);
        k = e;
      }
    }
    this.trace(`verified ${sectors.length} written sectors on ${hs.length} node(s)`);
  }

  private async pumpRead(i: Inc, range: [number, number]): Promise<void> {
    let done = false;
    void this.clientRead(i, range).finally(() => (done = true));
    await this.runUntil(`a verification read on ${i.name}`, () => done, 60_000);
    this.check();
  }
}

export async function runSim(opts: SimOptions): Promise<SimResult> {
  return new Simulator(opts).run();
}
