from slas.cli import main

raise SystemExit(main())
