/* GCC 12.2 (arm-none-eabi, -O2 and -O3) deletes the call to tr(): IPA-CP clones it with the
 * constant arguments, IV-opts addresses `src` as MEM[0B + integer], ipa-pure-const reads that as a
 * NULL dereference that ends the block, never sees the store, declares the clone `const`, and
 * DCE drops the call. Nothing here is undefined behaviour. KERNEL is `noinline` (the bug) or
 * nnc's NNC_KERNEL (the fix); docs/gcc-pure-const-bug.md has the analysis. */
#include <stdint.h>
#include <stdio.h>

#include "nnc_runtime.h"

volatile int32_t nnc_current_layer = -1; /* the board's fault handler reports it */
static uint8_t arena[64];

KERNEL static void tr(const int8_t *src, int8_t *dst)
{
    for (int c = 0; c < 2; ++c)
        for (int w = 0; w < 8; ++w)
            dst[c * 8 + w] = src[w * 2 + c];
}

int main(void)
{
    for (int i = 0; i < 16; i++) arena[i] = (uint8_t)i;
    tr((const int8_t *)arena, (int8_t *)arena + 32);
    int s = 0;
    for (int i = 0; i < 16; i++) s += ((int8_t *)arena)[32 + i] * (i % 3);
    printf("%d\n", s); /* 110 */
    return 0;
}
