#!/bin/busybox sh
# lvh guest init (PID 1 of lvh's initramfs). Exec mode: mount the root disk, run the command in a
# chroot, send its stdout/stderr and exit status to the host over virtio-serial ports, power off.
# Boot mode: mount the root disk, apply boot-time settings (ssh key), switch_root to its init.
# Settings come from /lvh/run.conf (a per-run cpio appended to the base initramfs).
[ -e /bin/sh ] || /bin/busybox --install -s /bin
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mkdir -p /proc /sys /dev /newroot /tmp
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null

LVH_MODE=exec
LVH_ROOT=/dev/vda
LVH_FSTYPE=ext4
LVH_ROOTFLAGS=rw
LVH_MOUNTS=
LVH_NET=0
LVH_INIT=/sbin/init
LVH_SSH_KEY=
[ -f /lvh/run.conf ] && . /lvh/run.conf
for arg in $(cat /proc/cmdline); do
	case "$arg" in init=*) LVH_INIT=${arg#init=} ;; esac
done

STATUS=/dev/null
die() {
	echo "lvh-init: $*" >&2
	echo "E $*" > "$STATUS" 2>/dev/null
	sync
	reboot -f
	while :; do sleep 60; done
}

# Modules of a modular kernel, in dependency order (found on the host).
if [ -f /lvh/modules.list ]; then
	while read -r m args; do
		[ -n "$m" ] && insmod "/lvh/modules/$m" $args 2>/dev/null
	done < /lvh/modules.list
fi

port() { # the device of the virtio-serial port named $1
	for d in /sys/class/virtio-ports/*; do
		[ -f "$d/name" ] && [ "$(cat "$d/name")" = "$1" ] && { echo "/dev/${d##*/}"; return 0; }
	done
	return 1
}

if [ "$LVH_MODE" = exec ]; then
	i=0
	until STATUS=$(port lvh.status); do
		i=$((i+1)); [ $i -gt 500 ] && { STATUS=/dev/null; die "no virtio-serial port lvh.status"; }
		sleep 0.01
	done
	OUT=$(port lvh.stdout) || die "no virtio-serial port lvh.stdout"
	ERR=$(port lvh.stderr) || die "no virtio-serial port lvh.stderr"
	exec 3>"$STATUS"
fi

if [ -z "$LVH_ROOT" ]; then
	# No image: the command runs in this initramfs (busybox).
	mount --bind / /newroot || die "cannot bind-mount the initramfs"
else
	i=0
	while [ ! -b "$LVH_ROOT" ]; do
		i=$((i+1)); [ $i -gt 1000 ] && die "root device $LVH_ROOT did not appear"
		sleep 0.01
	done
	mount -t "$LVH_FSTYPE" -o "$LVH_ROOTFLAGS" "$LVH_ROOT" /newroot || die "cannot mount $LVH_ROOT ($LVH_FSTYPE)"
fi

# 9p host mounts: "tag:target:ro|rw" separated by spaces.
for m in $LVH_MOUNTS; do
	tag=${m%%:*}; rest=${m#*:}; target=${rest%:*}; mode=${rest##*:}
	mkdir -p "/newroot$target" 2>/dev/null
	mount -t 9p -o "trans=virtio,version=9p2000.L,msize=524288,$mode" "$tag" "/newroot$target" \
		|| die "cannot mount host mount $tag at $target"
done

if [ "$LVH_NET" = 1 ]; then
	ip link set lo up
	ip link set eth0 up && ip addr add 10.0.2.15/24 dev eth0 && ip route add default via 10.0.2.2
	[ -f /newroot/etc/resolv.conf ] || echo "nameserver 10.0.2.3" > /tmp/resolv.conf
fi

# A busybox for tests and debugging, without touching the image: /run/lvh/busybox.
if [ -d /newroot/run ] && mount -t tmpfs tmpfs /newroot/run 2>/dev/null; then
	mkdir -p /newroot/run/lvh && cp /bin/busybox /newroot/run/lvh/busybox
fi

if [ "$LVH_MODE" != exec ]; then
	if [ -n "$LVH_SSH_KEY" ]; then
		mkdir -p /newroot/root/.ssh && chmod 700 /newroot/root/.ssh
		cat /lvh/ssh_key.pub >> /newroot/root/.ssh/authorized_keys
		chmod 600 /newroot/root/.ssh/authorized_keys
	fi
	umount /proc /sys 2>/dev/null
	mount --move /dev /newroot/dev 2>/dev/null || umount /dev
	exec switch_root /newroot "$LVH_INIT"
fi

mount -t proc proc /newroot/proc 2>/dev/null
mount -t sysfs sysfs /newroot/sys 2>/dev/null
mount -t devtmpfs devtmpfs /newroot/dev 2>/dev/null
mkdir -p /newroot/dev/pts /newroot/dev/shm 2>/dev/null
mount -t devpts devpts /newroot/dev/pts 2>/dev/null
mount -t tmpfs tmpfs /newroot/tmp 2>/dev/null
hostname lvh

echo "S" >&3
cd /newroot
LVH_CMD=$(cat /lvh/cmd)
HOME=/root TERM=linux PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
	chroot /newroot /bin/sh -c "cd / && $LVH_CMD" >"$OUT" 2>"$ERR" </dev/null
rc=$?
echo "X $rc" >&3
exec 3>&-
reboot -f
while :; do sleep 60; done
