# KC705 (xc7k325t-ffg900-2): timing constraints beside the pin constraints of nibble_top.xdc.
# The clock is clk156 (156 MHz, created in nibble_top.xdc).

# USB-UART input (CP2103): asynchronous to clk156; it enters through a two-flop synchronizer
# (rx_sync, ASYNC_REG), so no path from the pin is timed.
set_false_path -from [get_ports uart_0__rx__io]

# USB-UART output: changes once per clk_hz/baud cycles; the CP2103 samples it asynchronously.
set_false_path -to [get_ports uart_0__tx__io]

# Status LEDs (busy, done, error): seen by eye, not timed.
set_false_path -to [get_ports {led_*__io}]
