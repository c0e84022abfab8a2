/**
 * The number and time formats mdadm 4.2 prints: human_size / human_size_brief (util.c), the
 * bitmap chunk size (bitmap.c), ctime(3) as "%.24s", and printf's "%.1f".
 *
 * mdadm does this arithmetic in C `long long`; the helpers take bigints and wrap to 64 bits
 * the same way, so corrupt superblocks print the same odd numbers mdadm prints.
 */

const I64 = (x: bigint): bigint => BigInt.asIntN(64, x);

const KIB5000 = 5000n * 1024n;
const GIB2 = 2n * 1024n * 1024n * 1024n;
const TIB2 = GIB2 * 1024n;

function centi(x: bigint): string {
  // C prints cX/100 and cX%100 with "%ld.%02ld"; both divisions truncate toward zero.
  const frac = x % 100n;
  return `${x / 100n}.${(frac < 0n ? `-${-frac}` : `${frac}`).padStart(2, '0')}`;
}

function toBig(v: bigint | number): bigint {
  if (typeof v === 'bigint') return I64(v);
  if (!Number.isSafeInteger(v)) throw new RangeError(`size ${v} is not a safe integer`);
  return I64(BigInt(v));
}

/**
 * mdadm's human_size(): "" below 5000 KiB, else " (X.YY MiB X.YY MB)" (GiB/GB from 2 GiB,
 * TiB/TB from 2 TiB). Note the leading space.
 */
export function humanSize(bytes: bigint | number): string {
  const b = toBig(bytes);
  if (b < KIB5000) return '';
  if (b < GIB2) {
    const cMiB = (I64(b * 200n) / (1n << 20n) + 1n) / 2n;
    const cMB = (b / (1000000n / 200n) + 1n) / 2n;
    return ` (${centi(cMiB)} MiB ${centi(cMB)} MB)`;
  }
  if (b < TIB2) {
    const cGiB = (I64(b * 200n) / (1n << 30n) + 1n) / 2n;
    const cGB = (b / (1000000000n / 200n) + 1n) / 2n;
    return ` (${centi(cGiB)} GiB ${centi(cGB)} GB)`;
  }
  const cTiB = (I64(b * 200n) / (1n << 40n) + 1n) / 2n;
  const cTB = (b / (1000000000000n / 200n) + 1n) / 2n;
  return ` (${centi(cTiB)} TiB ${centi(cTB)} TB)`;
}

/** mdadm's human_size_brief(): "X.YYMiB" (IEC) or "X.YYMB" (JEDEC); "" below 5000 KiB. */
export function humanSizeBrief(bytes: bigint | number, prefix: 'IEC' | 'JEDEC'): string {
  const b = toBig(bytes);
  if (b < KIB5000) return '';
  if (prefix === 'IEC') {
    if (b < GIB2) return `${centi((I64(b * 200n) / (1n << 20n) + 1n) / 2n)}MiB`;
    if (b < TIB2) return `${centi((I64(b * 200n) / (1n << 30n) + 1n) / 2n)}GiB`;
    return `${centi((I64(b * 200n) / (1n << 40n) + 1n) / 2n)}TiB`;
  }
  if (b < GIB2) return `${centi((b / (1000000n / 200n) + 1n) / 2n)}MB`;
  if (b < TIB2) return `${centi((b / (1000000000n / 200n) + 1n) / 2n)}GB`;
  return `${centi((b / (1000000000000n / 200n) + 1n) / 2n)}TB`;
}

/** bitmap.c human_chunksize(): divide by 1024 while possible, "1 MB", "64 KB", "512 B". */
export function humanChunkSize(bytes: number): string {
  const suffixes = ['B', 'KB', 'MB', 'GB', 'TB'];
  let b = BigInt.asUintN(64, BigInt(Math.trunc(bytes)));
  let i = 0;
  while (b >> 10n !== 0n) {
    b >>= 10n;
    i++;
  }
  return `${b} ${suffixes[i] ?? '?'}`;
}

const DAYS = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'];
const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];

/**
 * `printf("%.24s", ctime(&t))`: "Mon Nov 23 23:01:41 2026" in the local time zone of the
 * process (mdadm uses localtime; set TZ for reproducible output).
 */
export function mdCtime(seconds: bigint | number): string {
  const s = typeof seconds === 'bigint' ? Number(seconds) : seconds;
  const d = new Date(s * 1000);
  if (Number.isNaN(d.getTime())) return '(null)'; // glibc ctime() fails -> printf prints (null)
  const two = (n: number) => n.toString().padStart(2, '0');
  const text =
    `${DAYS[d.getDay()]} ${MONTHS[d.getMonth()]}${d.getDate().toString().padStart(3, ' ')} ` +
    `${two(d.getHours())}:${two(d.getMinutes())}:${two(d.getSeconds())} ${d.getFullYear()}`;
  return text.slice(0, 24);
}

/** The 40-bit seconds of a v1.x time field (ctime/utime), as mdadm masks it. */
export function sbSeconds(t: bigint): number {
  return Number(t & 0xff_ffff_ffffn);
}

/**
 * printf("%.1f", x) as glibc does it: the exact binary value rounded to one decimal, ties to
 * even. (Number#toFixed rounds exact ties away from zero: 0.25 -> "0.3", glibc "0.2".)
 */
export function cFixed1(x: number): string {
  if (!Number.isFinite(x)) return Number.isNaN(x) ? 'nan' : x > 0 ? 'inf' : '-inf';
  const t = x * 10; // exact enough to detect the representable ties below
  // A double is an exact tie at one decimal only when x*4 is an odd integer (x = k + 0.25 / 0.75 ...).
  const q = x * 4;
  if (Number.isInteger(q) && Math.abs(q % 2) === 1) {
    const lo = Math.floor(t);
    const r = lo % 2 === 0 ? lo : lo + 1;
    const neg = r < 0 || (r === 0 && x < 0);
    const a = Math.abs(r);
    return `${neg ? '-' : ''}${Math.floor(a / 10)}.${a % 10}`;
  }
  return x.toFixed(1);
}
