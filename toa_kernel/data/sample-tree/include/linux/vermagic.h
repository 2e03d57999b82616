#ifndef _LINUX_VERMAGIC_H
#define _LINUX_VERMAGIC_H
/* toa-kernel SAMPLE tree: the module version magic, built from the release
 * and the configuration in the same order as a 2.6.32 kernel's:
 * "<release> SMP mod_unload modversions " for the sample's .config. */

#include <linux/utsrelease.h>
#include <linux/module.h>

#if defined(CONFIG_SMP)
# define VERMAGIC_SMP_PART "SMP "
#else
# define VERMAGIC_SMP_PART ""
#endif

#if defined(CONFIG_PREEMPT)
# define VERMAGIC_PREEMPT_PART "preempt "
#else
# define VERMAGIC_PREEMPT_PART ""
#endif

#if defined(CONFIG_MODULE_UNLOAD)
# define VERMAGIC_UNLOAD_PART "mod_unload "
#else
# define VERMAGIC_UNLOAD_PART ""
#endif

#if defined(CONFIG_MODVERSIONS)
# define VERMAGIC_MODVERSIONS_PART "modversions "
#else
# define VERMAGIC_MODVERSIONS_PART ""
#endif

#define VERMAGIC_STRING UTS_RELEASE " " VERMAGIC_SMP_PART VERMAGIC_PREEMPT_PART \
	VERMAGIC_UNLOAD_PART VERMAGIC_MODVERSIONS_PART

#endif /* _LINUX_VERMAGIC_H */
