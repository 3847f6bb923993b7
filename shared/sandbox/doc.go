// Package sandbox contains what challfn runs but does not trust: the Pulumi engine's
// process tree and, inside it, the scenario program (code from a ChallMaker and every
// module it imports). docs/threat-model.md says what each guarantee is and where it holds.
//
// Two processes of the binary challfn-sandbox (cmd/challfn-sandbox, installed next to
// the pulumi CLI) do the work:
//
//   - `challfn-sandbox engine -- pulumi ARGS` (Supervise, run by shared/iac for every CLI
//     process) is the supervisor of one engine process tree: its child subreaper, with a
//     lifeline pipe to the function process. When the engine exits, when the function
//     dies (kill -9 included: the lifeline reads end of file) or when it is told to end,
//     every process of the tree is ended: language host, resource providers, scenario
//     programs and whatever they started. Only a process a provider started in a session
//     of its own, a deployed resource (the challfn-local provider's Services), stays.
//   - `challfn-sandbox jail` (Run, called by the language host for every program run)
//     is PID 1 of the program's jail: new mount, PID, network, IPC and UTS namespaces,
//     a root of its own (read-only system directories and the program's folder, a
//     private /tmp, a fresh /proc, a minimal /dev), only loopback, on which the engine's
//     two gRPC addresses are served and forwarded by the language host, and no
//     privilege (an unprivileged uid or a user namespace without capabilities,
//     no_new_privs). When the program exits, everything left in the jail is killed.
//
// Which jail a machine allows (Flavor) is found by trying: FlavorRoot when the language
// host is root (namespaces made with its privileges, the program as uid/gid 65534),
// FlavorUserNS when unprivileged user namespaces work (the program keeps the function's
// uid, without capabilities), FlavorNone otherwise (the program's process tree is still
// ended with the operation). Mode Require refuses FlavorNone.
package sandbox
