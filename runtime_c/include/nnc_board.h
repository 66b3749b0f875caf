/* nnc board interface: what device_main.c needs from a board, and the per-layer profiling hooks.
 *
 * A board folder (runtime_c/boards/<board>/) provides startup.c (vector table, reset, fault
 * handlers), board.c (this interface) and board.ld (linker script). */
#ifndef NNC_BOARD_H
#define NNC_BOARD_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Starts a free-running timer driven by the emulator's virtual clock (under QEMU -icount it
 * advances a fixed number of ticks per executed instruction). */
void nnc_board_init(void);
/* Monotonically increasing 32-bit tick count; callers subtract with unsigned wrap-around. */
uint32_t nnc_board_ticks(void);

/* Index of the kernel running now (-1 outside the model); the fault handlers report it.
 * Defined in device_main.c. */
extern volatile int32_t nnc_current_layer;

/* Profiling hooks: firmware builds compile model.c with
 *   -include nnc_board.h -DNNC_LAYER_BEGIN(i)=nnc_layer_begin(i) -DNNC_LAYER_END(i)=nnc_layer_end(i)
 * so every kernel call is bracketed by two timer reads. Defined in device_main.c. */
void nnc_layer_begin(int32_t layer);
void nnc_layer_end(int32_t layer);

#ifdef __cplusplus
}
#endif

#endif /* NNC_BOARD_H */
