from wfdiffuser.cli import main

raise SystemExit(main())
