from vqrae.cli import main

raise SystemExit(main())
