from hushbridge.cli import console_main

console_main()
