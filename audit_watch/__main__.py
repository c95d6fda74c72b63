from audit_watch.cli import main

main()
