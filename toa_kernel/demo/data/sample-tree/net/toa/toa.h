#ifndef __NET__TOA_H__
#define __NET__TOA_H__
#include <linux/types.h>

#define TOA_VERSION "1.0.0.0"

#define TCPOPT_TOA  200

/* MUST be 4n !!!! */
#define TCPOLEN_TOA 8		/* |opcode|size|ip+port| = 1 + 1 + 6 */

/* MUST be 4 bytes alignment */
struct toa_data {
	__u8 opcode;
	__u8 opsize;
	__u16 port;
	__u32 ip;
};

#endif
