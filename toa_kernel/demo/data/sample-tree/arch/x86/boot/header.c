/*
 *  arch/x86/boot/header.c (toa-kernel SAMPLE tree, not a kernel)
 *
 *  The boot sector and the setup header of the sample's bzImage, at the
 *  offsets of the Linux/x86 boot protocol 2.10 (the version 2.6.32 uses),
 *  so that boot loaders' and libmagic's checks see a bzImage:
 *  0x1fe boot flag 0xAA55, 0x202 "HdrS", 0x206 version, 0x20e pointer to
 *  the kernel version string (relative to 0x200), 0x211 loadflags
 *  (LOADED_HIGH: a bzImage). tools/build fills setup_sects and syssize.
 */
#include <linux/types.h>
#include <linux/compile.h>
#include <linux/utsrelease.h>

#define BOOT_PROTOCOL_VERSION	0x020a
#define LOADED_HIGH		0x01
#define CAN_USE_HEAP		0x80
#define NORMAL_VGA		0xffff
#define HDRS_MAGIC		0x53726448	/* "HdrS" */

struct boot_image_header {
	/* 0x000: the boot sector; booting from it directly is not supported */
	__u8	bootsect_jump[2];
	char	bootsect_msg[0x1f1 - 2];
	/* 0x1f1: the setup header */
	__u8	setup_sects;
	__u16	root_flags;
	__u32	syssize;
	__u16	ram_size;
	__u16	vid_mode;
	__u16	root_dev;
	__u16	boot_flag;		/* 0x1fe: 0xAA55 */
	__u16	jump;			/* 0x200 */
	__u32	header;			/* 0x202: "HdrS" */
	__u16	version;		/* 0x206 */
	__u32	realmode_swtch;
	__u16	start_sys_seg;
	__u16	kernel_version;		/* 0x20e */
	__u8	type_of_loader;
	__u8	loadflags;		/* 0x211 */
	__u16	setup_move_size;
	__u32	code32_start;
	__u32	ramdisk_image;
	__u32	ramdisk_size;
	__u32	bootsect_kludge;
	__u16	heap_end_ptr;
	__u8	ext_loader_ver;
	__u8	ext_loader_type;
	__u32	cmd_line_ptr;
	__u32	initrd_addr_max;
	__u32	kernel_alignment;
	__u8	relocatable_kernel;
	__u8	_pad2[3];
	__u32	cmdline_size;
	__u32	hardware_subarch;
	__u64	hardware_subarch_data;
	__u32	payload_offset;
	__u32	payload_length;
	__u64	setup_data;
	/* 0x258: the kernel version string the header points to */
	char	kernel_version_str[256];
	/* where the real-mode setup code of a kernel would follow */
	__u8	setup_code[512];
} __attribute__((packed));

const struct boot_image_header hdr __attribute__((section(".header"), used)) = {
	.bootsect_jump	= { 0xeb, 0x2c },
	.bootsect_msg	= "Direct booting from floppy is no longer supported.\r\n"
			  "Please use a boot loader program instead.\r\n"
			  "\nRemove disk and press any key to reboot . . .\r\n",
	.setup_sects	= 0,			/* filled in by tools/build */
	.root_flags	= 1,			/* mount root read-only */
	.vid_mode	= NORMAL_VGA,
	.boot_flag	= 0xAA55,
	.jump		= 0x66eb,
	.header		= HDRS_MAGIC,
	.version	= BOOT_PROTOCOL_VERSION,
	.kernel_version	= __builtin_offsetof(struct boot_image_header, kernel_version_str) - 0x200,
	.loadflags	= LOADED_HIGH,		/* the boot loader may add CAN_USE_HEAP */
	.code32_start	= 0x100000,
	.initrd_addr_max = 0x7fffffff,
	.kernel_alignment = 0x1000000,
	.relocatable_kernel = 1,
	.cmdline_size	= 2048 - 1,
	.kernel_version_str = UTS_RELEASE " (" LINUX_COMPILE_BY "@" LINUX_COMPILE_HOST ") "
			      UTS_VERSION,
};
