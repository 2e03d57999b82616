/*
 * Linker script of the toa-kernel SAMPLE tree's vmlinux (not a kernel):
 * links the built-in objects at the x86_64 kernel address, and keeps the
 * exported-symbol tables (__ksymtab*) that System.map and depmod read.
 */
#define __START_KERNEL_map	0xffffffff80000000
#define __PHYSICAL_START	0x1000000

OUTPUT_FORMAT("elf64-x86-64", "elf64-x86-64", "elf64-x86-64")
OUTPUT_ARCH(i386:x86-64)
ENTRY(start_kernel)

PHDRS {
	text PT_LOAD FLAGS(5);		/* R_E */
	data PT_LOAD FLAGS(6);		/* RW_ */
}

SECTIONS
{
	. = __START_KERNEL_map + __PHYSICAL_START;
	_text = .;
	.text : AT(ADDR(.text) - __START_KERNEL_map) {
		_stext = .;
		*(.text .text.*)
		*(.init.text)
		_etext = .;
	} :text

	. = ALIGN(4096);
	.rodata : AT(ADDR(.rodata) - __START_KERNEL_map) {
		*(.rodata .rodata.*)
	} :data
	__ksymtab : AT(ADDR(__ksymtab) - __START_KERNEL_map) {
		__start___ksymtab = .;
		*(__ksymtab)
		__stop___ksymtab = .;
	}
	__ksymtab_gpl : AT(ADDR(__ksymtab_gpl) - __START_KERNEL_map) {
		__start___ksymtab_gpl = .;
		*(__ksymtab_gpl)
		__stop___ksymtab_gpl = .;
	}
	__ksymtab_strings : AT(ADDR(__ksymtab_strings) - __START_KERNEL_map) {
		*(__ksymtab_strings)
	}

	. = ALIGN(4096);
	.data : AT(ADDR(.data) - __START_KERNEL_map) {
		_sdata = .;
		*(.data .data.*)
		*(.init.data)
		__initcall_start = .;
		*(.initcall6.init)
		__initcall_end = .;
		_edata = .;
	}

	. = ALIGN(4096);
	.bss : AT(ADDR(.bss) - __START_KERNEL_map) {
		__bss_start = .;
		*(.bss .bss.*)
		*(COMMON)
		__bss_stop = .;
	}
	_end = .;

	/DISCARD/ : {
		*(.exit.text)
		*(.exitcall.exit)
		*(.eh_frame)
		*(.note.GNU-stack)
		*(.note.gnu.property)
		*(.comment)
		*(.modinfo)
	}
}
