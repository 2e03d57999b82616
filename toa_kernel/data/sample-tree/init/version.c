/*
 *  init/version.c (toa-kernel SAMPLE tree, not a kernel)
 *
 *  The banner carries the release, who built it, the compiler and the
 *  build number, in the format of a 2.6.32 kernel's.
 */
#include <linux/compile.h>
#include <linux/module.h>
#include <linux/utsrelease.h>
#include <linux/version.h>

/* The version code of the release this tree builds (2.6.32: 132640). */
const int linux_version_code = LINUX_VERSION_CODE;

/* FIXED STRINGS! Don't touch! */
const char linux_banner[] =
	"Linux version " UTS_RELEASE " (" LINUX_COMPILE_BY "@"
	LINUX_COMPILE_HOST ") (" LINUX_COMPILER ") " UTS_VERSION "\n";
