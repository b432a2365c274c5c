"""`python -m localkube.nodeagent --kubeconfig FILE --state-dir DIR [--name NAME] ...`"""

from localkube.nodeagent.cli import main

main()
