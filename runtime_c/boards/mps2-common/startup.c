/* Startup for the Arm MPS2 boards (AN500 Cortex-M7, AN386 Cortex-M4) as QEMU models them.
 *
 * Reset_Handler enables the FPU, copies .data from flash, zeroes .bss, opens the semihosting
 * stdio handles and calls main. It does not use newlib's rdimon crt0: that one places the stack
 * where the semihosting HEAPINFO call says, which on QEMU's M-profile boards is not RAM.
 * Faults print `NNC_FAULT <name> layer=<n> pc=<addr>` through semihosting and stop the emulator
 * with a nonzero status. */
#include <stdint.h>
#include <stdlib.h>

#include "nnc_board.h"

extern uint32_t __data_load__, __data_start__, __data_end__, __bss_start__, __bss_end__;
extern uint32_t __StackTop;
extern int main(void);
extern void initialise_monitor_handles(void);

#define SCB_SHCSR (*(volatile uint32_t *)0xE000ED24u)
#define SCB_CPACR (*(volatile uint32_t *)0xE000ED88u)

#define SYS_WRITE0 0x04
#define SYS_EXIT 0x18
#define ADP_STOPPED_RUNTIME_ERROR 0x20023 /* QEMU exits with status 1 */

static int semihost(int op, const void *arg)
{
    register int r0 __asm__("r0") = op;
    register const void *r1 __asm__("r1") = arg;
    __asm__ volatile("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}

static char *put_str(char *p, const char *s)
{
    while (*s) *p++ = *s++;
    return p;
}

static char *put_int(char *p, int32_t v)
{
    char digits[12];
    int n = 0;
    uint32_t u = v < 0 ? 0u - (uint32_t)v : (uint32_t)v;
    if (v < 0) *p++ = '-';
    do {
        digits[n++] = (char)('0' + u % 10u);
        u /= 10u;
    } while (u);
    while (n) *p++ = digits[--n];
    return p;
}

static char *put_hex(char *p, uint32_t v)
{
    int shift;
    p = put_str(p, "0x");
    for (shift = 28; shift >= 0; shift -= 4) *p++ = "0123456789abcdef"[(v >> shift) & 0xFu];
    return p;
}

/* Reports a fault from its exception frame (r0-r3, r12, lr, pc, xpsr) and stops. No stdio:
 * the fault may have hit inside newlib. */
__attribute__((used, noreturn)) static void nnc_fault(const char *name, const uint32_t *frame)
{
    char line[96];
    char *p = put_str(line, "\nNNC_FAULT ");
    p = put_str(p, name);
    p = put_str(p, " layer=");
    p = put_int(p, nnc_current_layer);
    p = put_str(p, " pc=");
    p = put_hex(p, frame[6]);
    *p++ = '\n';
    *p = '\0';
    semihost(SYS_WRITE0, line);
    semihost(SYS_EXIT, (const void *)ADP_STOPPED_RUNTIME_ERROR);
    for (;;) {
    }
}

/* Each handler passes the stacked frame (always on MSP: no RTOS, no thread stack) to nnc_fault. */
#define NNC_FAULT_HANDLER(fn, label)                                          \
    __attribute__((used)) static void fn##_report(const uint32_t *frame)      \
    {                                                                         \
        nnc_fault(label, frame);                                              \
    }                                                                         \
    __attribute__((naked)) void fn(void)                                      \
    {                                                                         \
        __asm__ volatile("mrs r0, msp\n\tb " #fn "_report\n");                \
    }

NNC_FAULT_HANDLER(NMI_Handler, "NMI")
NNC_FAULT_HANDLER(HardFault_Handler, "HardFault")
NNC_FAULT_HANDLER(MemManage_Handler, "MemManage")
NNC_FAULT_HANDLER(BusFault_Handler, "BusFault")
NNC_FAULT_HANDLER(UsageFault_Handler, "UsageFault")
NNC_FAULT_HANDLER(Default_Handler, "UnexpectedInterrupt")

void Reset_Handler(void)
{
    uint32_t *src = &__data_load__, *dst;
    /* CP10/CP11 full access before any floating-point instruction runs */
    SCB_CPACR |= 0xFu << 20;
    __asm__ volatile("dsb\n\tisb" ::: "memory");
    /* MemManage, BusFault and UsageFault get their own handlers (else all are HardFault) */
    SCB_SHCSR |= (1u << 16) | (1u << 17) | (1u << 18);
    for (dst = &__data_start__; dst < &__data_end__;) *dst++ = *src++;
    for (dst = &__bss_start__; dst < &__bss_end__;) *dst++ = 0;
    initialise_monitor_handles();
    exit(main());
}

/* Cortex-M vector table: initial stack pointer, then the exception handlers. */
__attribute__((section(".isr_vector"), used)) const uintptr_t nnc_vectors[16 + 32] = {
    (uintptr_t)&__StackTop,
    (uintptr_t)Reset_Handler,
    (uintptr_t)NMI_Handler,
    (uintptr_t)HardFault_Handler,
    (uintptr_t)MemManage_Handler,
    (uintptr_t)BusFault_Handler,
    (uintptr_t)UsageFault_Handler,
    0, 0, 0, 0,
    (uintptr_t)Default_Handler, /* SVCall */
    (uintptr_t)Default_Handler, /* DebugMonitor */
    0,
    (uintptr_t)Default_Handler, /* PendSV */
    (uintptr_t)Default_Handler, /* SysTick */
    /* 32 external interrupts: none is enabled, so any that fires is unexpected */
    [16 ... 47] = (uintptr_t)Default_Handler,
};
