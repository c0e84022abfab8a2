/**
 * tsmd's help texts, shaped like mdadm's (ReadMe.c: Help, OptionHelp and one Help_MODE per
 * mode): `tsmd --help` lists the modes, `tsmd --MODE --help` gives a mode's usage line and its
 * options one per line, `tsmd --help-options` the options every mode shares. The words are
 * tsmd's own; what differs from mdadm (the node daemon, files as members, the verbs mdadm does
 * not have) is said where it applies.
 */
import type { Mode } from './args.js';

const GENERAL = `tsmd is Linux md software RAID (the md driver and mdadm) rebuilt in TypeScript.
Members are files or block devices; arrays run in the node daemon (tsmd daemon).
Usage: tsmd --create device options...
            create a new array from unused devices
       tsmd --assemble device options...
            start a previously created array (in the daemon, if one runs)
       tsmd --manage device options...
            change a running array: --add, --re-add, --remove, --fail, --replace
       tsmd --misc options... devices
            report on or act on arrays and members: --examine, --detail, --query,
            --zero-superblock, --stop, --run, --readonly, --readwrite, --wait,
            --action, --speed-limit-min/--speed-limit-max
       tsmd --grow options device
            change a running array: its bitmap; raid4/5/6 members, chunk, layout
       tsmd --monitor options...
            report events of the daemon's arrays to a program or syslog
       tsmd --status
            the daemon's mdstat (the format of /proc/mdstat)
       tsmd device options...
            shorthand for --manage
       tsmd daemon [options]
            run the node daemon (tsmd daemon --help lists its options)
       tsmd version
            print the version
Any argument that does not start with '-' is a device name; the first is
usually the md device, the ones after it member devices.

 For help on one mode, put --help after it, e.g.
         tsmd --assemble --help
 For the options every mode shares:
         tsmd --help-options
`;

const OPTIONS = `Usage: tsmd [mode] [md-device] [options] <member devices...>

Arguments that do not start with '-' are device names: the first is often the
md device, the ones after it member devices (files or block devices).
Long options may be shortened to any prefix that names only one of them.

Options every mode shares:
  --help        -h   : general help, or after a mode the mode's help
  --help-options     : this text
  --version     -V   : print the version
  --verbose     -v   : say more about what is happening
  --quiet       -q   : say nothing that is not needed
  --brief       -b   : shorter reports (--detail, --examine)
  --force       -f   : override the usual checks
  --config=     -c   : mdadm.conf to read (also TSMD_CONF)
  --scan        -s   : take devices and arrays from mdadm.conf
  --run-dir=         : the daemon's run directory (also TSMD_RUN_DIR)

Modes:
  --create      -C   : create a new array
  --assemble    -A   : start a previously created array
  --manage           : add, remove or fail members of a running array
  --misc             : reports and actions on arrays and members
  --grow        -G   : change a running array (bitmap)
  --monitor     -F   : report events of running arrays
  --examine     -E   : print the superblock of members
  --examine-bitmap -X: print the write-intent bitmap of members
  --examine-badblocks: print the bad-block log of members
  --detail      -D   : report on a running array
  --query       -Q   : say how a device relates to md
  --status           : the daemon's mdstat
`;

const CREATE = `Usage: tsmd --create md-device --level=N --raid-devices=N [options] member-devices...

Creates a new array: writes an md v1.x superblock to each member and starts
the array (in the daemon, if one runs; else the initial sync runs before the
command returns). "missing" stands for an absent member.

Options that are valid with --create (-C):
  --level=           -l : linear, raid0, raid1, raid4, raid5, raid6, raid10
  --raid-devices=    -n : number of active members
  --spare-devices=   -x : number of spare members
  --chunk=           -c : chunk size in KiB (K, M, G suffixes) [512K]
  --layout=          -p : raid5/6 algorithm, raid10 nN/fN/oN, raid0 layout
  --parity=             : same as --layout
  --size=            -z : space used on each member, KiB
  --name=            -N : array name
  --homehost=           : host that owns the array (in its name)
  --uuid=            -u : array UUID
  --metadata=        -e : superblock version: 1.0, 1.1 or 1.2 [1.2]
  --bitmap=          -b : internal, clustered or none
  --bitmap-chunk=       : bitmap chunk size
  --nodes=              : slots of a clustered bitmap
  --cluster-name=    -K : name of the cluster
  --data-offset=        : where data starts on each member, KiB
  --assume-clean        : skip the initial resync
  --write-mostly     -W : members after it are write-mostly (raid1)
  --run              -R : do not ask before overwriting members that look used
  --force            -f : same, and raid5 without the recovery onto the last member
`;

const ASSEMBLE = `Usage: tsmd --assemble md-device [options] member-devices...
       tsmd --assemble --scan [options] [md-device]

Starts an array from its members: the member with the most events is the
truth, stale ones are left out. With --scan the members and arrays come from
mdadm.conf (DEVICE and ARRAY lines).

Options that are valid with --assemble (-A):
  --uuid=            -u : only members of the array with this UUID
  --name=            -N : only members of the array with this name
  --config=          -c : mdadm.conf to read
  --scan             -s : assemble the arrays mdadm.conf lists
  --run              -R : start the array even if it is degraded
  --force            -f : start it even with members that disagree
  --readonly         -o : start it read-only
  --detail           -D : then report on it as --detail does
`;

const BUILD = `Usage: tsmd --build md-device --level=N --raid-devices=N member-devices...

Arrays without superblocks are not supported by tsmd: --build is refused.

Options that mdadm takes with --build (-B):
  --level=           -l : linear or raid0
  --raid-devices=    -n : number of members
  --chunk=           -c : chunk size (rounding for linear)
`;

const MANAGE = `Usage: tsmd [--manage] md-device [options] member-devices...

Changes the members of a running array. --manage may be left out when the
md device comes first.

Options that are valid with --manage:
  --add              -a : add the devices after it (a spare, or re-added)
  --add-spare           : add the devices after it as spares
  --re-add              : put back devices that recently left the array
  --remove           -r : remove the devices after it (failed or spare)
  --fail             -f : mark the devices after it faulty
  --set-faulty          : same as --fail
  --replace             : rebuild a spare as a copy of the devices after it
  --with                : the spare a --replace should use
  --write-mostly     -W : devices added after it are write-mostly (raid1)
  --readwrite        -w : devices added after it are not write-mostly
`;

const MISC = `Usage: tsmd misc-option devices...

Reports on or acts on md arrays or members, depending on the option.
--misc may be left out.

Options that are valid with --misc:
  --examine          -E : print the superblock of each member
  --examine-bitmap   -X : print the write-intent bitmap of members (or bitmap files)
  --examine-badblocks   : print the bad-block log of members
  --detail           -D : report on running arrays
  --query            -Q : say how each device relates to md
  --zero-superblock     : erase the md superblock of members
  --stop             -S : stop running arrays
  --run              -R : start an array that was assembled without --run
  --readonly         -o : make running arrays read-only
  --readwrite        -w : make running arrays writable
  --test             -t : with --detail: exit 1 if degraded
  --wait             -W : wait until running syncs are done
  --action=             : start check or repair, or idle or frozen
  --speed-limit-min=    : sync speed always allowed for the array, KiB/s ("system":
                          the node's); without an array: the node daemon's, for
                          every array (/proc/sys/dev/raid/speed_limit_min)
  --speed-limit-max=    : sync speed never exceeded for the array, KiB/s; without an
                          array: the node daemon's (/proc/sys/dev/raid/speed_limit_max)
  --status              : the daemon's mdstat
  --brief            -b : one line per array (--examine, --detail)
  --scan             -s : every array (--detail, --stop), or every member
                          mdadm.conf names (--examine)
`;

const GROW = `Usage: tsmd --grow md-device options

Changes a running array while it serves I/O. tsmd adds and removes the
write-intent bitmap and reshapes arrays as md does: raid4/5/6 more or fewer
members, another chunk size or layout; raid10 (near layouts) more members;
raid1 more or fewer mirrors; a linear array another member (--add); --size
the space used on each member (the new region is resynced). A reshape runs
in the background (see --status, --detail; --wait waits for it;
--action=frozen / idle pause and resume it) and survives a crash or a stop:
it resumes at the next assembly. The data offset moves as mdadm 4.2 moves it
(down for a grow, up for a shrink when there is room after the data); a
shrink with no such room runs in place with --backup-file, which the next
assembly needs too (the daemon remembers it in its run directory). Shrinking
needs --array-size first. --level: md's takeovers, which move no data (raid1
<-> raid5 of two devices, raid0 <-> raid10, raid4 <-> raid5, raid0 <-> raid4
or raid5 parity-last, raid1/raid10 -> raid0), are instant; raid5 <-> raid6
and raid0 <-> raid5 restripe (raid6 through the *-6 layouts as md does);
--add gives the new level its spares.

Options that are valid with --grow (-G):
  --bitmap=          -b : internal (add one) or none (remove it)
  --bitmap-chunk=       : chunk size of the bitmap added
  --raid-devices=    -n : raid4/5/6, raid10 near: more members (spares added
                          first); raid4/5/6 fewer (after --array-size; the
                          members that leave become spares); raid1: more or
                          fewer mirrors
  --add              -a : linear: a member appended (the array grows); with
                          --raid-devices or --level: spares added first
  --chunk=           -c : raid4/5/6: the new chunk size
  --layout=          -p : raid5/6: the new layout (preserve / normalise with
                          --level)
  --force            -f : grow with fewer spares than new members (degraded)
  --level=           -l : the new level (with --add DEV... for its spares)
  --size=            -z : space used on each member, KiB, or max
  --array-size=      -Z : the size the array is served with (KiB or K/M/G/T,
                          or max); not recorded on the members
  --backup-file=        : where a reshape in place saves its critical sections
  --continue            : go on with a reshape that is paused or waits for its
                          backup file
`;

const MONITOR = `Usage: tsmd --monitor options [md-devices...]

Polls the daemon's arrays and reports each change (Fail, DegradedArray,
SpareActive, RebuildStarted, RebuildNN, RebuildFinished, ...). Without md
devices, with --scan, every array is watched. There must be somewhere to send
events: --program, --mail or --syslog.

Options that are valid with --monitor (-F, --follow):
  --program=            : run PROGRAM EVENT md-device [member] for each event
  --alert=              : same as --program
  --mail=            -m : address to mail events to
  --syslog           -y : report events to syslog
  --delay=           -d : seconds between polls [60]
  --increment=       -i : report RebuildNN every N percent [20]
  --scan             -s : watch every array
  --oneshot             : check once, then exit
  --test             -t : send a TestMessage event for each array
  --config=          -c : mdadm.conf to read
`;

const INCREMENTAL = `Usage: tsmd --incremental device

Adding members one at a time as they appear (udev's mdadm -I) is not
supported by tsmd: --incremental is refused.
`;

/** The text `tsmd --MODE --help` prints; `tsmd --help` (no mode yet) prints the general one. */
export function helpText(mode: Mode | null): string {
  switch (mode) {
    case null:
      return GENERAL;
    case 'create':
      return CREATE;
    case 'assemble':
      return ASSEMBLE;
    case 'build':
      return BUILD;
    case 'manage':
      return MANAGE;
    case 'misc':
      return MISC;
    case 'grow':
      return GROW;
    case 'monitor':
      return MONITOR;
    case 'incremental':
      return INCREMENTAL;
  }
}

/** `tsmd --help-options`. */
export function optionsHelpText(): string {
  return OPTIONS;
}
