// VT-d register offsets, bits and fault reasons as the spec, Linux and QEMU name them.

/** Register offsets (QEMU's layout: IVA at ECAP.IRO×16 = 0xf0, FRCD at CAP.FRO×16 = 0x220). */
export const DMAR_VER_REG = 0x00;
export const DMAR_CAP_REG = 0x08;
export const DMAR_ECAP_REG = 0x10;
export const DMAR_GCMD_REG = 0x18;
export const DMAR_GSTS_REG = 0x1c;
export const DMAR_RTADDR_REG = 0x20;
export const DMAR_CCMD_REG = 0x28;
export const DMAR_FSTS_REG = 0x34;
export const DMAR_IVA_REG = 0xf0;
export const DMAR_IOTLB_REG = 0xf8;
export const DMAR_FRCD_REG = 0x220;

/** GCMD / GSTS bits. */
export const DMA_GCMD_TE = 1 << 31;
export const DMA_GCMD_SRTP = 1 << 30;
export const DMA_GSTS_TES = 1 << 31;
export const DMA_GSTS_RTPS = 1 << 30;

/** FSTS bits. */
export const DMA_FSTS_PFO = 1 << 0;
export const DMA_FSTS_PPF = 1 << 1;

/** Second-level PTE bits. */
export const DMA_PTE_READ = 1n << 0n;
export const DMA_PTE_WRITE = 1n << 1n;
export const DMA_PTE_LARGE_PAGE = 1n << 7n;
export const DMA_PTE_SNP = 1n << 11n;

/** Legacy-mode DMA-remapping fault reasons (FRCD.FR), QEMU's names. */
export const VTD_FR_ROOT_ENTRY_P = 0x1;
export const VTD_FR_CONTEXT_ENTRY_P = 0x2;
export const VTD_FR_CONTEXT_ENTRY_INV = 0x3;
export const VTD_FR_ADDR_BEYOND_MGAW = 0x4;
export const VTD_FR_WRITE = 0x5;
export const VTD_FR_READ = 0x6;
export const VTD_FR_PAGING_ENTRY_INV = 0x7;
export const VTD_FR_ROOT_TABLE_INV = 0x8;
export const VTD_FR_CONTEXT_TABLE_INV = 0x9;
export const VTD_FR_ROOT_ENTRY_RSVD = 0xa;
export const VTD_FR_CONTEXT_ENTRY_RSVD = 0xb;
export const VTD_FR_PAGING_ENTRY_RSVD = 0xc;
export const VTD_FR_CONTEXT_ENTRY_TT = 0xd;
export const VTD_FR_INTERRUPT_ADDR = 0xe;

/** Linux's text for each reason (`dma_remap_fault_reasons[]`). */
export const DMAR_FAULT_REASONS: Readonly<Record<number, string>> = {
  0x1: 'Present bit in root entry is clear',
  0x2: 'Present bit in context entry is clear',
  0x3: 'Invalid context entry',
  0x4: 'Access beyond MGAW',
  0x5: 'PTE Write access is not set',
  0x6: 'PTE Read access is not set',
  0x7: 'Next page table ptr is invalid',
  0x8: 'Root table address invalid',
  0x9: 'Context table ptr is invalid',
  0xa: 'non-zero reserved fields in RTP',
  0xb: 'non-zero reserved fields in CTP',
  0xc: 'non-zero reserved fields in PTE',
  0xd: 'PCE for translation request specifies blocking',
  0xe: 'Untranslated request to interrupt address range',
};
