from an2dl_kit.cli import main

raise SystemExit(main())
