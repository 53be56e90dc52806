// Package httpapitest holds what the tests of the HTTP gateway share to
// drive it as its users do: a headless Chromium (StartBrowser), and statusd
// as a child process (BuildStatusd, StartStatusd), whose memory is read
// from /proc and which is stopped with a signal.
//
// It is imported by tests only; nothing in it runs in statusd.
package httpapitest
