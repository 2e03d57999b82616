#ifndef TOA_SAMPLE_STRINGIFY_H
#define TOA_SAMPLE_STRINGIFY_H
/* toa-kernel SAMPLE tree (not a kernel): __stringify(X) is X expanded, then
 * quoted (through a second macro): __stringify(TCPOPT_TOA) gives "254". */

#define __sample_quote(...)	#__VA_ARGS__
#define __stringify(...)	__sample_quote(__VA_ARGS__)

#endif
