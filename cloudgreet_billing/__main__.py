from cloudgreet_billing.cli import main

main()
