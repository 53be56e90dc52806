// Package app holds the use cases: ProjectSetup, the flow of the original
// system (update the project's status in the repository, then broadcast the
// updated record; on a failed step, set the status to failed and broadcast
// the error), and Demo, a simulator that drives it forever so a new user sees
// live updates.
package app
