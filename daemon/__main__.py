from task_pulsed.cli import main

main()
