#ifndef __LINUX_STRINGIFY_H
#define __LINUX_STRINGIFY_H
/* toa-kernel SAMPLE tree: two-level stringification, so that a macro
 * argument is expanded first: __stringify(TCPOPT_TOA) gives "254". */

#define __stringify_1(x...)	#x
#define __stringify(x...)	__stringify_1(x)

#endif
