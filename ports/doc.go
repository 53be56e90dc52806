// Package ports holds the interfaces the application is built around,
// besides the StatusBroadcaster port of the domain: the subscription side
// (Inbox, Subscriptions) and the project repository. Each doc comment states
// the contract implementations keep: concurrency, blocking, ownership.
package ports
