#!/usr/bin/env bash
# Build the Debian + systemd image that plays the production host in Molecule and `make up`:
#   bash scripts/build-base-image.sh [bookworm|trixie]   (Debian 12, the default, or 13)
# No registry can be reached here, so the image is made with debootstrap from the machine's own
# Debian mirror and imported. It is built once and reused while an image of the same recipe exists.
set -euo pipefail

suite="${1:-bookworm}"
case "$suite" in
  bookworm) release=12 ;;
  trixie) release=13 ;;
  *) echo "usage: $0 [bookworm|trixie]: the Debian releases the roles support" >&2; exit 2 ;;
esac
image="celery-ray-stack/debian$release-systemd:latest"
packages=systemd,systemd-sysv,python3,python3-apt,python3-venv,sudo,ca-certificates,procps,iproute2
recipe=$( { cat "$0"; echo "$suite"; } | sha256sum | cut -c1-16)

if [ "$(docker image inspect --format '{{ index .Config.Labels "recipe" }}' "$image" 2>/dev/null)" = "$recipe" ]; then
  echo "$image is present (recipe $recipe)."
  exit 0
fi

if ! command -v debootstrap >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
fi

mirror=$(awk '/^URIs:/ { print $2; exit }' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
mirror="${mirror:-http://deb.debian.org/debian}"

rootfs=$(mktemp -d /var/tmp/celery-ray-rootfs.XXXXXX)
trap 'rm -rf "$rootfs"' EXIT

echo "Building $image from $mirror (about a minute)..."
debootstrap --variant=minbase --include="$packages" "$suite" "$rootfs" "$mirror" >"$rootfs.log" 2>&1 \
  || { tail -n 30 "$rootfs.log" >&2; exit 1; }
rm -f "$rootfs.log"
cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
# Systemd units that only make sense on real hardware keep a container from reaching "running".
for unit in getty.target systemd-udevd.service systemd-udev-trigger.service systemd-firstboot.service \
    systemd-remount-fs.service sys-kernel-debug.mount sys-kernel-tracing.mount; do
  ln -sf /dev/null "$rootfs/etc/systemd/system/$unit"
done
rm -f "$rootfs/etc/machine-id" && touch "$rootfs/etc/machine-id"
apt-get clean -o Dir="$rootfs" 2>/dev/null || true
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/archives/*.deb

tar -C "$rootfs" -c . | docker import \
  --change 'CMD ["/lib/systemd/systemd"]' \
  --change 'ENV container=docker' \
  --change "LABEL recipe=$recipe" \
  - "$image" >/dev/null
echo "Built $image (recipe $recipe)."
