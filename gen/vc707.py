"""Xilinx VC707 evaluation board (Virtex-7 xc7vx485t-ffg1761-2), amaranth-boards style.

Pins from the *VC707 Evaluation Board for the Virtex-7 FPGA User Guide* (Xilinx UG885):

* 200 MHz LVDS system clock SYSCLK_P / SYSCLK_N on E19 / E18 (bank 38; UG885 "System Clock Source").
* CPU_RESET push button (SW8), active high, on AV40 (LVCMOS18; UG885 "User Pushbuttons").
* USB-to-UART bridge (Silicon Labs CP2103, J17): FPGA receive USB_UART_RX on AU33 (CP2103 TXD),
  FPGA transmit USB_UART_TX on AU36 (CP2103 RXD), LVCMOS18 (UG885 "USB-to-UART Bridge").
* User LEDs GPIO_LED_0_LS … GPIO_LED_7_LS on AM39 AN39 AR37 AT37 AR35 AP41 AP42 AU39
  (LVCMOS18, active high; UG885 "User LEDs").

Only the resources the accelerator uses are described; the rest of the board is not.
"""
import os
import subprocess

from amaranth.build import Attrs, Clock, DiffPairs, Pins, Resource
from amaranth.vendor import XilinxPlatform
from amaranth_boards.resources import LEDResources, UARTResource

__all__ = ["VC707Platform"]


class VC707Platform(XilinxPlatform):
    device      = "xc7vx485t"
    package     = "ffg1761"
    speed       = "2"
    default_clk = "clk200"
    default_rst = "rst"
    resources   = [
        Resource("clk200", 0, DiffPairs("E19", "E18", dir="i"),
                 Clock(200e6), Attrs(IOSTANDARD="LVDS")),

        # CPU_RESET (SW8) reads 1 while pressed
        Resource("rst", 0, Pins("AV40", dir="i"), Attrs(IOSTANDARD="LVCMOS18")),

        *LEDResources(pins="AM39 AN39 AR37 AT37 AR35 AP41 AP42 AU39",
                      attrs=Attrs(IOSTANDARD="LVCMOS18")),

        UARTResource(0,
            rx="AU33", tx="AU36",
            attrs=Attrs(IOSTANDARD="LVCMOS18")
        ),
    ]
    connectors  = []

    def toolchain_program(self, products, name):
        openocd = os.environ.get("OPENOCD", "openocd")
        with products.extract("{}.bit".format(name)) as bitstream_filename:
            subprocess.check_call([openocd,
                "-c", "source [find board/xilinx_vc707.cfg]; init; pld load 0 {}; exit"
                      .format(bitstream_filename)
            ])
