#!/bin/sh
# Builds the tiny Linux guest's initramfs for the QEMU tests (lib/launch/qemu.ts):
# busybox-static, the virtio modules of the installed Debian kernel (linux-image-amd64)
# and an /init that takes its job from the kernel command line and reports on the
# serial console. Prints the path of the cpio.gz on stdout.
#
# Usage: scripts/build-initramfs.sh [KERNEL_VERSION]
#   KERNEL_VERSION defaults to the one of the newest /boot/vmlinuz-*.
#   Cache: $VHU_INITRAMFS_CACHE_DIR, else ${TMPDIR:-/tmp}/vhost-user-client-cache; the file
#   is keyed by the kernel version and a hash of this script and of busybox, and rebuilt
#   only when one of them changes. Concurrent builders each build in a private
#   directory; the first rename wins.
#
# Guest command line (vhu.*; values contain no spaces):
#   vhu.job=net,blk,idle  jobs, in order (default idle)
#   vhu.ip=10.0.2.15      eth0's address (/24)
#   vhu.peer=10.0.2.2     neighbor pinged; given a static MAC, so every ping is one frame
#   vhu.count=5           pings
#   vhu.bytes=1048576     blk: bytes written at the start of /dev/vda (a multiple of 4096)
#   vhu.pattern=WORD      blk: the line "WORD\n" repeated is the data written
#   vhu.end=wait          wait (default) or poweroff after the jobs
# Marker lines: "VHU-BOOTED ...", one "VHU-RESULT {json}" per job, "VHU-DONE".
set -eu

die() { echo "build-initramfs: $*" >&2; exit 1; }

if [ $# -ge 1 ]; then
  kver=$1
else
  kernel=$(ls -1 /boot/vmlinuz-* 2>/dev/null | sort -V | tail -n 1) || true
  [ -n "${kernel:-}" ] || die "no /boot/vmlinuz-* (apt-get install linux-image-amd64)"
  kver=${kernel#/boot/vmlinuz-}
fi
moddir=/lib/modules/$kver/kernel
[ -d "$moddir" ] || die "no $moddir (apt-get install linux-image-amd64)"
busybox=$(command -v busybox || true)
[ -x /bin/busybox ] && busybox=/bin/busybox
[ -n "$busybox" ] || die "busybox not found (apt-get install busybox-static)"
# A dynamically linked busybox would need its libraries in the image.
if file -L "$busybox" 2>/dev/null | grep -q dynamically; then
  die "$busybox is dynamically linked (apt-get install busybox-static)"
fi
command -v cpio >/dev/null || die "cpio not found (apt-get install cpio)"

# Module load order: dependencies first (modules.dep of the Debian kernel).
MODULES="virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci failover net_failover virtio_net virtio_blk"

cache=${VHU_INITRAMFS_CACHE_DIR:-${TMPDIR:-/tmp}/vhost-user-client-cache}
key=$(cat "$0" "$busybox" | sha256sum | cut -c1-12)
out=$cache/initramfs-$kver-$key.cpio.gz
if [ -s "$out" ]; then echo "$out"; exit 0; fi
mkdir -p "$cache"

work=$(mktemp -d "$cache/initramfs-build.XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM
root=$work/root
mkdir -p "$root/bin" "$root/sbin" "$root/proc" "$root/sys" "$root/dev" "$root/tmp" "$root/lib/modules"
cp "$busybox" "$root/bin/busybox"

for m in $MODULES; do
  f=$(find "$moddir" -name "$m.ko" -o -name "$m.ko.xz" -o -name "$m.ko.zst" -o -name "$m.ko.gz" | head -n 1)
  # Built into this kernel (no module file): nothing to load.
  [ -n "$f" ] || continue
  case $f in
    *.ko.xz) xz -dc "$f" > "$root/lib/modules/$m.ko" ;;
    *.ko.zst) zstd -dqc "$f" > "$root/lib/modules/$m.ko" ;;
    *.ko.gz) gzip -dc "$f" > "$root/lib/modules/$m.ko" ;;
    *) cp "$f" "$root/lib/modules/$m.ko" ;;
  esac
done

cat > "$root/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
echo 0 > /proc/sys/kernel/printk
for m in @MODULES@; do
  [ -f /lib/modules/$m.ko ] && insmod /lib/modules/$m.ko
done

job=idle ip=10.0.2.15 peer=10.0.2.2 count=5 bytes=1048576 pattern=vhost-user-client-blk-pattern end=wait
for a in $(cat /proc/cmdline); do
  case $a in
    vhu.job=*) job=${a#*=} ;;
    vhu.ip=*) ip=${a#*=} ;;
    vhu.peer=*) peer=${a#*=} ;;
    vhu.count=*) count=${a#*=} ;;
    vhu.bytes=*) bytes=${a#*=} ;;
    vhu.pattern=*) pattern=${a#*=} ;;
    vhu.end=*) end=${a#*=} ;;
  esac
done

# Devices appear asynchronously after insmod.
i=0
while [ $i -lt 50 ]; do
  case $job in *net*) [ -e /sys/class/net/eth0 ] || { sleep 0.1; i=$((i+1)); continue; } ;; esac
  case $job in *blk*) [ -e /dev/vda ] || { sleep 0.1; i=$((i+1)); continue; } ;; esac
  break
done
echo "VHU-BOOTED job=$job net=$(ls /sys/class/net | tr '\n' ' ')blk=$(ls /sys/block | tr '\n' ' ')"

net_job() {
  s=/sys/class/net/eth0/statistics
  if [ ! -e $s ]; then echo 'VHU-RESULT {"job":"net","error":"no eth0"}'; return; fi
  ip link set eth0 up
  ip addr add $ip/24 dev eth0
  # A static neighbor: each ping is one ICMP frame on the wire, no ARP.
  arp -s $peer 02:00:00:00:00:02
  t0=$(cat $s/tx_packets); r0=$(cat $s/rx_packets)
  ping -c $count -i 0.2 -W 1 $peer >/dev/null 2>&1 || true
  sleep 0.5
  echo "VHU-RESULT {\"job\":\"net\",\"mac\":\"$(cat /sys/class/net/eth0/address)\",\"pings\":$count,\"tx_packets\":$(( $(cat $s/tx_packets) - t0 )),\"rx_packets\":$(( $(cat $s/rx_packets) - r0 )),\"tx_bytes\":$(cat $s/tx_bytes),\"rx_bytes\":$(cat $s/rx_bytes),\"rx_dropped\":$(cat $s/rx_dropped)}"
}

blk_job() {
  if [ ! -e /dev/vda ]; then echo 'VHU-RESULT {"job":"blk","error":"no /dev/vda"}'; return; fi
  yes "$pattern" | head -c $bytes > /tmp/pattern
  written=$(sha256sum /tmp/pattern | cut -c1-64)
  dd if=/tmp/pattern of=/dev/vda bs=4096 conv=fsync 2>/dev/null
  sync
  # Drop the block device's page cache so the read below comes from the device.
  blockdev --flushbufs /dev/vda
  echo 3 > /proc/sys/vm/drop_caches
  read=$(dd if=/dev/vda bs=4096 count=$((bytes / 4096)) 2>/dev/null | sha256sum | cut -c1-64)
  echo "VHU-RESULT {\"job\":\"blk\",\"bytes\":$bytes,\"sectors\":$(cat /sys/block/vda/size),\"written\":\"$written\",\"read\":\"$read\"}"
}

for j in $(echo $job | tr ',' ' '); do
  case $j in
    net) net_job ;;
    blk) blk_job ;;
    idle) ;;
    *) echo "VHU-RESULT {\"job\":\"$j\",\"error\":\"unknown job\"}" ;;
  esac
done
echo VHU-DONE
if [ "$end" = poweroff ]; then poweroff -f; fi
while :; do sleep 3600; done
INIT
sed -i "s/@MODULES@/$MODULES/" "$root/init"
chmod 755 "$root/init"

(cd "$root" && find . | sort | cpio -o -H newc --quiet -R 0:0) | gzip -6 > "$work/initramfs.cpio.gz"
mv "$work/initramfs.cpio.gz" "$work/done.cpio.gz"
# rename(2) is atomic: a concurrent builder's file is as good as ours.
mv -n "$work/done.cpio.gz" "$out" 2>/dev/null || true
[ -s "$out" ] || die "cannot install $out"
echo "$out"
