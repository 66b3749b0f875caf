/* Timer for the MPS2 boards: CMSDK APB timer 0 at 0x40000000, clocked at SYSCLK (25 MHz) from
 * QEMU's virtual clock. It counts down from RELOAD; we run it free from 0xFFFFFFFF and invert
 * the value, so ticks count up and wrap modulo 2^32. */
#include <stdint.h>

#include "nnc_board.h"

#define TIMER0_BASE 0x40000000u
#define TIMER_CTRL (*(volatile uint32_t *)(TIMER0_BASE + 0x00u))
#define TIMER_VALUE (*(volatile uint32_t *)(TIMER0_BASE + 0x04u))
#define TIMER_RELOAD (*(volatile uint32_t *)(TIMER0_BASE + 0x08u))
#define TIMER_CTRL_ENABLE 1u

void nnc_board_init(void)
{
    TIMER_CTRL = 0;
    TIMER_RELOAD = 0xFFFFFFFFu;
    TIMER_VALUE = 0xFFFFFFFFu;
    TIMER_CTRL = TIMER_CTRL_ENABLE; /* no interrupt: wrap-around is handled by the callers */
}

uint32_t nnc_board_ticks(void)
{
    return 0xFFFFFFFFu - TIMER_VALUE;
}
