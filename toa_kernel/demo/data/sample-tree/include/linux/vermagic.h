#ifndef TOA_SAMPLE_VERMAGIC_H
#define TOA_SAMPLE_VERMAGIC_H
/* toa-kernel SAMPLE tree (not a kernel): the version magic of modules,
 * "<release> SMP mod_unload modversions " for the sample's .config. */

#include <linux/utsrelease.h>

#ifdef CONFIG_SMP
#define __VM_SMP "SMP "
#else
#define __VM_SMP ""
#endif
#ifdef CONFIG_PREEMPT
#define __VM_PREEMPT "preempt "
#else
#define __VM_PREEMPT ""
#endif
#ifdef CONFIG_MODULE_UNLOAD
#define __VM_UNLOAD "mod_unload "
#else
#define __VM_UNLOAD ""
#endif
#ifdef CONFIG_MODVERSIONS
#define __VM_MODVERSIONS "modversions "
#else
#define __VM_MODVERSIONS ""
#endif

#define VERMAGIC_STRING \
	UTS_RELEASE " " __VM_SMP __VM_PREEMPT __VM_UNLOAD __VM_MODVERSIONS

#endif
