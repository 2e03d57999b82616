/*
 *  init/version.c (toa-kernel SAMPLE tree, not a kernel)
 *
 *  The banner start_kernel prints: release, builder, compiler, build number
 *  and date, from the headers make generates.
 */
#include <linux/compile.h>
#include <linux/utsrelease.h>
#include <linux/version.h>

/* 2.6.32 gives 132640 */
const int linux_version_code = LINUX_VERSION_CODE;

#define SAMPLE_BUILT_BY	LINUX_COMPILE_BY "@" LINUX_COMPILE_HOST

const char linux_banner[] = "Linux version " UTS_RELEASE
	" (" SAMPLE_BUILT_BY ") (" LINUX_COMPILER ") " UTS_VERSION "\n";
