/* SPDX-License-Identifier: MIT */
/*
 * systemd's readiness protocol (sd_notify(3)) without libsystemd: one
 * datagram to $NOTIFY_SOCKET, when that is set. "READY=1" once listening,
 * "RELOADING=1" then "READY=1" around a reload, "STOPPING=1".
 */
#ifndef PM_NOTIFY_H
#define PM_NOTIFY_H

/* Sends state; returns 0, -errno, or 0 when not run by systemd. */
int notify_systemd(const char *state);

#endif
