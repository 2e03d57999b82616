#ifndef TOA_SAMPLE_TYPES_H
#define TOA_SAMPLE_TYPES_H
/* toa-kernel SAMPLE tree: the few types the sample's C files use. */

typedef unsigned char __u8;
typedef unsigned short __u16;
typedef unsigned int __u32;
typedef unsigned long long __u64;
typedef signed char __s8;
typedef short __s16;
typedef int __s32;
typedef long long __s64;

typedef __u16 __be16;
typedef __u32 __be32;

typedef unsigned long size_t;
typedef _Bool bool;

#define NULL ((void *)0)
#define true 1
#define false 0

#endif
