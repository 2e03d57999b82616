#ifndef TOA_SAMPLE_COMPILER_H
#define TOA_SAMPLE_COMPILER_H
/* toa-kernel SAMPLE tree (not a kernel): compiler attributes */

#define __used			__attribute__((__used__))
#define __maybe_unused		__attribute__((unused))
#define likely(x)		__builtin_expect(!!(x), 1)
#define unlikely(x)		__builtin_expect(!!(x), 0)

#endif
