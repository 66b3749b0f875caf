/* nnc board: MPS3 AN547 timer.
 *
 * The FPGA I/O block's COUNTER register (FPGAIO at 0x49302000, offset 0x18) counts at 20 MHz
 * while PRESCALE is 0, its reset value. QEMU derives it from the virtual clock
 * (hw/misc/mps2-fpgaio.c), so under `-icount shift=7` it advances exactly 20e6 * 128e-9 = 2.56
 * ticks per executed instruction, identically from run to run. It is 32 bits wide and wraps after
 * about 1.68e9 instructions; callers subtract with unsigned wrap-around. */
#include <stdint.h>

#include "nnc_board.h"

/* Secure alias of the FPGAIO block (the firmware runs in Secure state). */
#define FPGAIO_BASE 0x59302000u
#define FPGAIO_COUNTER (*(volatile uint32_t *)(FPGAIO_BASE + 0x18u))
#define FPGAIO_PRESCALE (*(volatile uint32_t *)(FPGAIO_BASE + 0x1cu))

void nnc_board_init(void)
{
    FPGAIO_PRESCALE = 0u; /* count every 20 MHz clock */
    FPGAIO_COUNTER = 0u;
}

uint32_t nnc_board_ticks(void)
{
    return FPGAIO_COUNTER;
}
