"""The machine's fixed layout: guest-physical addresses and the ports of the
platform devices, shared by guest memory, the boot paths and the devices
(all of which sit above this module and read it; it reads nothing).

Everything the VMM places in guest memory before the first instruction
lives below 1 MiB, which every e820 map we hand out marks as reserved
except the conventional low RAM Linux expects.
"""

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB

PAGE_SIZE = 4096

BOOT_GDT = 0x1000          # VMM's boot GDT (flat code/data segments)
BOOT_IDT = 0x1800          # empty IDT: interrupts are off at entry
BOOT_INFO = 0x5000         # ELF boot-info block (one page)
ZERO_PAGE = 0x7000         # Linux boot_params
PML4 = 0x9000              # identity page tables: PML4, PDPT, 4 page directories
PDPT = 0xA000
PD_BASE = 0xB000           # 4 pages: 0xB000..0xEFFF, 2 MiB pages covering 4 GiB
CMDLINE = 0x20000          # command line (Linux and ELF), up to CMDLINE_MAX bytes
CMDLINE_MAX = 64 * KIB - 1
AP_STACKS = 0x30000        # ELF boot: per-vCPU initial stacks, growing down
AP_STACK_SIZE = 8 * KIB
MAX_VCPUS = 32             # 0x30000 + 32 * 8 KiB = 0x70000
EBDA_START = 0x9FC00       # conventional RAM ends here
ACPI_TABLES = 0xE0000      # RSDP and tables: Linux scans 0xE0000-0xFFFFF for the RSDP
ACPI_TABLES_END = 0x100000
HIGH_MEMORY = 0x100000     # kernels load at 1 MiB

PCI_HOLE_START = 3 * GIB   # MMIO window below 4 GiB: LAPIC, IOAPIC, future devices
PCI_HOLE_END = 4 * GIB
IOAPIC_BASE = 0xFEC00000
LAPIC_BASE = 0xFEE00000

E820_RAM = 1
E820_RESERVED = 2
E820_ACPI = 3

# ACPI power management block (the FADT points the guest here).
PM1A_EVT_BLK = 0x600
PM1A_CNT_BLK = 0x604
PM1_EVT_LEN = 4
PM1_CNT_LEN = 2
SCI_IRQ = 9
S5_SLP_TYP = 5
RESET_REG = 0x606
RESET_VALUE = 0x06
