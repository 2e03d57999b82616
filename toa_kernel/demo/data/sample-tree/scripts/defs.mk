# toa-kernel SAMPLE tree (not a kernel): definitions shared by the top
# Makefile, scripts/Makefile.build (one directory) and scripts/Makefile.modpost.

# What make shows of each step:
#   default   one short line per step, e.g. "  CC [M]  net/toa/toa.o"
#   V=1       the commands themselves (make echoes them)
#   make -s   nothing
# A recipe line is written "$(call show,TAG,WHAT)command".
# "$(call note,TAG,WHAT)" is a shell command printing such a line but with -s,
# "$(call say,TEXT)" one printing "  TEXT".
note = printf '  %-8s%s\n' '$(1)' '$(2)'
say = echo '  $(1)'
ifeq ($(V),1)
show =
Q =
else ifneq ($(findstring s,$(firstword -$(MAKEFLAGS))),)
show = @
Q = @
note = :
say = :
else
show = @$(note);
Q = @
endif

# The tools (CC=..., e.g. "CC=ccache gcc", is taken from make's command line)
CC      ?= gcc
HOSTCC  ?= gcc
LD      ?= ld
AR      ?= ar
NM      ?= nm
OBJCOPY ?= objcopy
ifeq ($(origin CC),default)
CC := gcc
endif
ifeq ($(origin LD),default)
LD := ld
endif
ifeq ($(origin AR),default)
AR := ar
endif
export NM

# $(call cc-option,-fflag): -fflag when $(CC) accepts it, else nothing
cc-option = $(shell $(CC) -Werror $(1) -c -x c /dev/null -o /dev/null >/dev/null 2>&1 && echo $(1))

# Flags of every C file compiled for the sample's vmlinux and modules
sample-cflags := -D__KERNEL__ -nostdinc -isystem $(shell $(CC) -print-file-name=include) \
	-Iinclude -include include/linux/autoconf.h \
	-O2 -m64 -mcmodel=kernel -mno-red-zone -fno-pic -ffreestanding \
	-fno-common -fno-strict-aliasing -fno-stack-protector \
	-fno-asynchronous-unwind-tables -Wall -Wstrict-prototypes
ifdef CONFIG_CC_OPTIMIZE_FOR_SIZE
sample-cflags += -Os
endif
module-cflags := -DMODULE
ldflags := -m elf_x86_64

# gcc writes the headers a file read into dir/.file.o.d; make reads them back
depfile = $(dir $@).$(notdir $@).d
