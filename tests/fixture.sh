#!/usr/bin/env bash
# Builds the tier-full fixture in DIR (which must exist and be empty): every
# kind of metadata Linux holds. Needs root (chown, trusted.*, chattr +i,
# mknod, setcap) and attr, acl, libcap2-bin, e2fsprogs, python3.
# Used by tests/full_tier.rs and scripts/fidelity.sh.
set -euo pipefail
cd "$1"
mkdir -p dir/sub sticky emptydir
printf '#!/bin/sh\n' > suid
printf '#!/bin/sh\n' > sgid
printf 'owned by 12345' > owned
printf 'has xattrs' > xattrs
printf 'has an acl' > acl
printf '\177ELF pretend' > capbin
printf 'cannot change' > immutable
printf 'append only\n' > append
printf 'noatime flag' > noatime
printf 'linked twice' > dir/sub/leader
chmod 4755 suid
chmod 2755 sgid
chmod 1777 sticky
chown 12345:12345 owned dir/sub
chgrp 23456 sgid
ln dir/sub/leader hardlink
ln -s dir/sub/leader link
ln -s /nonexistent dangling
mkfifo fifo
mknod chardev c 1 3
truncate -s 1G sparse
dd if=/dev/urandom of=sparse bs=1M count=1 seek=100 conv=notrunc status=none
dd if=/dev/urandom of=sparse bs=1M count=1 seek=900 conv=notrunc status=none
setfattr -n user.color -v blue xattrs
setfattr -n trusted.secret -v 0x00ff00 xattrs
setfattr -n security.snaptest -v audit xattrs
setfattr -n user.dir -v yes dir
setfattr -h -n trusted.onlink -v linkvalue link
setfacl -m u:12345:rwx,g:23456:r acl
setfacl -d -m u:12345:rx dir
setcap cap_net_raw+ep capbin
python3 -c "import socket; s=socket.socket(socket.AF_UNIX); s.bind('sock')"
touch -h -d @1600000000.123456789 link
touch -a -d @1400000000.111111111 owned xattrs acl capbin immutable append noatime sparse
touch -m -d @1500000000.987654321 owned xattrs acl capbin immutable append noatime sparse
touch -d @1400000000.5 dir/sub dir sticky emptydir
chattr +i immutable
chattr +a append
chattr +A noatime
chattr +d dir
