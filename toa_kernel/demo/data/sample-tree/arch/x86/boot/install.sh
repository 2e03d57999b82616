#!/bin/sh
#
# arch/x86/boot/install.sh (toa-kernel SAMPLE tree, not a kernel)
#
# "make install" script, behaving as the 2.6.32 kernel's:
#
#   sh arch/x86/boot/install.sh RELEASE IMAGE MAP DIR
#
#   $1 - kernel release (make's KERNELRELEASE)
#   $2 - kernel image file (arch/x86/boot/bzImage)
#   $3 - kernel map file (System.map)
#   $4 - default install path (make's INSTALL_PATH, /boot unless given)
#
# 1. Both files must exist, else: "*** Missing file", exit 1.
# 2. If ~/bin/${INSTALLKERNEL} is executable, exec it with the 4 arguments;
#    else if /sbin/${INSTALLKERNEL} is executable, exec that.
#    (INSTALLKERNEL comes from the top Makefile, "installkernel" unless
#    given on make's command line; ~ is $HOME.)
# 3. Otherwise install by hand: keep $4/vmlinuz as $4/vmlinuz.old and
#    $4/System.map as $4/System.old, copy the image to $4/vmlinuz and the
#    map to $4/System.map, then run lilo if there is one.
#

image=$2 map=$3 dir=$4

for file in "$image" "$map"; do
	if [ ! -f "$file" ]; then
		printf '\n *** Missing file: %s\n' "$file" >&2
		printf ' *** You need to run "make" before "make install".\n\n' >&2
		exit 1
	fi
done

# The user's own install script first, then the system's.
for candidate in "$HOME/bin/${INSTALLKERNEL}" "/sbin/${INSTALLKERNEL}"; do
	if [ -x "$candidate" ]; then
		exec "$candidate" "$@"
	fi
done

# No installkernel: copy the files, keeping the previous ones.
keep_old () {
	if [ -f "$1" ]; then
		mv "$1" "$2"
	fi
}
keep_old "$dir/vmlinuz" "$dir/vmlinuz.old"
keep_old "$dir/System.map" "$dir/System.old"
cat "$image" > "$dir/vmlinuz"
cp "$map" "$dir/System.map"

for loader in /sbin/lilo /etc/lilo/install; do
	if [ -x "$loader" ]; then
		exec "$loader"
	fi
done
sync
echo "Cannot find LILO."
