/* SPDX-License-Identifier: GPL-2.0 */
/* Where elb-toa defines the TCP option kind (its src/toa.h): build-module sets it. */
#ifndef HELLO_TOA_H
#define HELLO_TOA_H

#define TCPOPT_TOA  254

#endif
