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

check_file () {
	if [ ! -f "$1" ]; then
		echo ""                                                   1>&2
		echo " *** Missing file: $1"                              1>&2
		echo ' *** You need to run "make" before "make install".' 1>&2
		echo ""                                                   1>&2
		exit 1
	fi
}

check_file "$2"
check_file "$3"

# A custom install script of the user, then the system's
if [ -x ~/bin/${INSTALLKERNEL} ]; then exec ~/bin/${INSTALLKERNEL} "$@"; fi
if [ -x /sbin/${INSTALLKERNEL} ]; then exec /sbin/${INSTALLKERNEL} "$@"; fi

# No installkernel: copy the files, keeping the previous ones
if [ -f $4/vmlinuz ]; then
	mv $4/vmlinuz $4/vmlinuz.old
fi

if [ -f $4/System.map ]; then
	mv $4/System.map $4/System.old
fi

cat $2 > $4/vmlinuz
cp $3 $4/System.map

if [ -x /sbin/lilo ]; then
	/sbin/lilo
elif [ -x /etc/lilo/install ]; then
	/etc/lilo/install
else
	sync
	echo "Cannot find LILO."
fi
