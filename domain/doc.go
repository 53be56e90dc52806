// Package domain is the language of statusbroadcaster: a Project and its
// Status, the event envelope that carries a project's full record to
// subscribers, the logical topics "projects:<id>" and "projects:*", and the
// StatusBroadcaster port through which the setup process announces changes.
//
// It imports only the standard library. Everything it is given is validated:
// a project id can never forge a topic, an envelope always has exactly the
// shape of the original Phoenix messages.
package domain
