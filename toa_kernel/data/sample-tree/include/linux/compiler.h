#ifndef __LINUX_COMPILER_H
#define __LINUX_COMPILER_H
/* toa-kernel SAMPLE tree */

#define __used			__attribute__((__used__))
#define __maybe_unused		__attribute__((unused))
#define likely(x)		__builtin_expect(!!(x), 1)
#define unlikely(x)		__builtin_expect(!!(x), 0)

#endif /* __LINUX_COMPILER_H */
