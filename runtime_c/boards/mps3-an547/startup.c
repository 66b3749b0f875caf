/* nnc board: MPS3 AN547 (Cortex-M55) startup: vector table, reset, fault reporting.
 *
 * Reset_Handler enables the FPU and MVE, copies .data from flash, zeroes .bss, arms the stack
 * limit, opens the semihosting console and calls main(); it does not use rdimon's crt0 `_start`,
 * whose SYS_HEAPINFO answer from QEMU does not match this board's memory map.
 * Any fault prints `NNC_FAULT <name> layer=<n> pc=<addr>` and a line of fault status registers
 * through semihosting (no stdio: the fault may have hit inside newlib) and stops QEMU with exit
 * status 1. */
#include <stdint.h>
#include <stdlib.h>

#include "nnc_board.h"

/* System control block registers (Armv8.1-M). */
#define SCB_VTOR (*(volatile uint32_t *)0xE000ED08u)
#define SCB_SHCSR (*(volatile uint32_t *)0xE000ED24u)
#define SCB_CFSR (*(volatile uint32_t *)0xE000ED28u)
#define SCB_HFSR (*(volatile uint32_t *)0xE000ED2Cu)
#define SCB_MMFAR (*(volatile uint32_t *)0xE000ED34u)
#define SCB_BFAR (*(volatile uint32_t *)0xE000ED38u)
#define SCB_CPACR (*(volatile uint32_t *)0xE000ED88u)
#define SCB_SFSR (*(volatile uint32_t *)0xE000EDE4u)

#define SHCSR_MEMFAULTENA (1u << 16)
#define SHCSR_BUSFAULTENA (1u << 17)
#define SHCSR_USGFAULTENA (1u << 18)
#define SHCSR_SECUREFAULTENA (1u << 19)
#define CFSR_STKOF (1u << 20)

/* Semihosting operations (Arm semihosting spec) and the application-exit reason code. */
#define SYS_WRITE0 0x04
#define SYS_EXIT 0x18
#define ADP_STOPPED_RUNTIME_ERROR 0x20023u /* QEMU exits with status 1 */

#define NUM_IRQS 96 /* QEMU's an547 has 96 external interrupts */

/* From board.ld. */
extern uint32_t __StackTop[];
extern uint32_t __StackLimit[];
extern uint32_t __HeapLimit[];
extern uint32_t __RamStart[];
extern uint32_t __data_start__[];
extern uint32_t __data_end__[];
extern uint32_t __data_load__[];
extern uint32_t __bss_start__[];
extern uint32_t __bss_end__[];

/* From newlib / librdimon. */
extern uint32_t __heap_limit;
void initialise_monitor_handles(void);
void __libc_init_array(void);
int main(void);

void Reset_Handler(void);
void nnc_fault_entry(void);

typedef void (*nnc_vector)(void);

__attribute__((section(".vectors"), used)) const nnc_vector nnc_vectors[16 + NUM_IRQS] = {
    (nnc_vector)(uintptr_t)__StackTop,
    Reset_Handler,
    [2 ... 16 + NUM_IRQS - 1] = nnc_fault_entry,
};

/* Runs before the FPU is on, so kept apart from any code the compiler might vectorize. */
__attribute__((noinline)) static void enable_fpu_and_mve(void)
{
    SCB_CPACR |= 0xFu << 20; /* CP10 and CP11 (FPU and MVE) full access, Secure state */
    __asm volatile("dsb\n\tisb" ::: "memory");
}

__attribute__((noinline)) static void init_memory(void)
{
    const volatile uint32_t *src = __data_load__;
    volatile uint32_t *dst = __data_start__;
    while (dst < __data_end__) *dst++ = *src++;
    for (dst = __bss_start__; dst < __bss_end__;) *dst++ = 0u;
}

__attribute__((noreturn, section(".text.Reset_Handler"))) void Reset_Handler(void)
{
    SCB_VTOR = (uint32_t)(uintptr_t)nnc_vectors;
    enable_fpu_and_mve();
    init_memory();
    /* A stack overflow becomes a UsageFault (STKOF) instead of silently corrupting .bss. */
    __asm volatile("msr msplim, %0" : : "r"(__StackLimit) : "memory");
    /* Report faults under their own names instead of escalating everything to HardFault. */
    SCB_SHCSR |= SHCSR_MEMFAULTENA | SHCSR_BUSFAULTENA | SHCSR_USGFAULTENA | SHCSR_SECUREFAULTENA;
    __asm volatile("dsb\n\tisb" ::: "memory");
    __heap_limit = (uint32_t)(uintptr_t)__HeapLimit; /* newlib's _sbrk stops here */
    initialise_monitor_handles();
    __libc_init_array();
    exit(main());
}

static int32_t semihost(int32_t op, const void *arg)
{
    register int32_t r0 __asm__("r0") = op;
    register const void *r1 __asm__("r1") = arg;
    __asm volatile("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}

static char *put_str(char *p, const char *s)
{
    while (*s) *p++ = *s++;
    return p;
}

static char *put_dec(char *p, int32_t v)
{
    char tmp[12];
    int n = 0;
    uint32_t u = v < 0 ? 0u - (uint32_t)v : (uint32_t)v;
    if (v < 0) *p++ = '-';
    do {
        tmp[n++] = (char)('0' + u % 10u);
        u /= 10u;
    } while (u != 0u);
    while (n > 0) *p++ = tmp[--n];
    return p;
}

static char *put_hex(char *p, uint32_t v)
{
    p = put_str(p, "0x");
    for (int shift = 28; shift >= 0; shift -= 4) *p++ = "0123456789abcdef"[(v >> shift) & 0xFu];
    return p;
}

static const char *fault_name(uint32_t exception)
{
    switch (exception) {
    case 2: return "NMI";
    case 3: return "HardFault";
    case 4: return "MemManage";
    case 5: return "BusFault";
    case 6: return "UsageFault";
    case 7: return "SecureFault";
    default: return "UnexpectedInterrupt"; /* SVCall, PendSV, SysTick, IRQs: none is enabled */
    }
}

/* Called by nnc_fault_entry on its own stack: `frame` is the interrupted context's stacked
 * registers (r0-r3, r12, lr, pc, xpsr), read only when it lies in RAM. */
__attribute__((noreturn, used)) void nnc_fault_report(uint32_t exception, const uint32_t *frame)
{
    char line[160];
    char *p = line;
    uint32_t cfsr = SCB_CFSR;
    int frame_ok = frame >= __RamStart && frame + 8 <= __StackTop;

    p = put_str(p, "\nNNC_FAULT ");
    p = put_str(p, fault_name(exception));
    p = put_str(p, " layer=");
    p = put_dec(p, nnc_current_layer);
    p = put_str(p, " pc=");
    p = put_hex(p, frame_ok ? frame[6] : 0u);
    p = put_str(p, "\n");
    *p = '\0';
    semihost(SYS_WRITE0, line);

    p = put_str(line, "nnc: exception ");
    p = put_dec(p, (int32_t)exception);
    p = put_str(p, " cfsr=");
    p = put_hex(p, cfsr);
    p = put_str(p, " hfsr=");
    p = put_hex(p, SCB_HFSR);
    p = put_str(p, " mmfar=");
    p = put_hex(p, SCB_MMFAR);
    p = put_str(p, " bfar=");
    p = put_hex(p, SCB_BFAR);
    p = put_str(p, " sfsr=");
    p = put_hex(p, SCB_SFSR);
    if (cfsr & CFSR_STKOF) p = put_str(p, " (stack overflow)");
    p = put_str(p, "\n");
    *p = '\0';
    semihost(SYS_WRITE0, line);

    semihost(SYS_EXIT, (const void *)ADP_STOPPED_RUNTIME_ERROR);
    for (;;) {
    }
}

/* The fault stack: the faulting stack may be at its limit or corrupt. */
__attribute__((used, aligned(8))) uint8_t nnc_fault_stack[1024];

__attribute__((naked)) void nnc_fault_entry(void)
{
    __asm volatile(
        "movs r0, #0\n\t"
        "msr msplim, r0\n\t" /* no stack limit while reporting */
        "tst lr, #4\n\t"     /* EXC_RETURN.SPSEL: which stack holds the frame */
        "ite eq\n\t"
        "mrseq r1, msp\n\t"
        "mrsne r1, psp\n\t"
        "ldr r2, =nnc_fault_stack + 1024\n\t"
        "msr msp, r2\n\t"
        "mrs r0, ipsr\n\t"
        "b nnc_fault_report\n\t"
        ".ltorg");
}
