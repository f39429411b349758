/* SPDX-License-Identifier: MIT */
/*
 * io_uring constants that Debian bookworm's liburing 2.3 headers lack (or
 * that older headers lack), with the values of the kernel uapi header. Only
 * the name is missing: whether the running kernel has the feature is
 * probed at run time (setup flags by trying, opcodes by the probe ring,
 * params.features bits).
 */
#ifndef PM_URING_COMPAT_H
#define PM_URING_COMPAT_H

#include <liburing.h>

/* Setup flags (5.18 - 6.6). */
#ifndef IORING_SETUP_SUBMIT_ALL
#define IORING_SETUP_SUBMIT_ALL		(1U << 7)	/* 5.18 */
#endif
#ifndef IORING_SETUP_COOP_TASKRUN
#define IORING_SETUP_COOP_TASKRUN	(1U << 8)	/* 5.19 */
#endif
#ifndef IORING_SETUP_TASKRUN_FLAG
#define IORING_SETUP_TASKRUN_FLAG	(1U << 9)	/* 5.19 */
#endif
#ifndef IORING_SETUP_SINGLE_ISSUER
#define IORING_SETUP_SINGLE_ISSUER	(1U << 12)	/* 6.0 */
#endif
#ifndef IORING_SETUP_DEFER_TASKRUN
#define IORING_SETUP_DEFER_TASKRUN	(1U << 13)	/* 6.1 */
#endif
#ifndef IORING_SETUP_NO_SQARRAY
#define IORING_SETUP_NO_SQARRAY		(1U << 16)	/* 6.6 */
#endif

/* Cancel flags (6.0). */
#ifndef IORING_ASYNC_CANCEL_ALL
#define IORING_ASYNC_CANCEL_ALL		(1U << 0)
#endif
#ifndef IORING_ASYNC_CANCEL_FD
#define IORING_ASYNC_CANCEL_FD		(1U << 1)
#endif

/* sqe->ioprio for send/recv: one request takes several buffers (6.10). */
#ifndef IORING_RECVSEND_BUNDLE
#define IORING_RECVSEND_BUNDLE		(1U << 4)
#endif

/* cqe->flags. */
#ifndef IORING_CQE_F_MORE
#define IORING_CQE_F_MORE		(1U << 1)	/* 5.19 multishot */
#endif
#ifndef IORING_CQE_F_SOCK_NONEMPTY
#define IORING_CQE_F_SOCK_NONEMPTY	(1U << 2)	/* 6.0 */
#endif
#ifndef IORING_CQE_F_BUF_MORE
#define IORING_CQE_F_BUF_MORE		(1U << 4)	/* 6.12 */
#endif

/* params.features (6.3 - 6.15). */
#ifndef IORING_FEAT_REG_REG_RING
#define IORING_FEAT_REG_REG_RING	(1U << 13)
#endif
#ifndef IORING_FEAT_RECVSEND_BUNDLE
#define IORING_FEAT_RECVSEND_BUNDLE	(1U << 14)
#endif
#ifndef IORING_FEAT_MIN_TIMEOUT
#define IORING_FEAT_MIN_TIMEOUT		(1U << 15)
#endif

/*
 * Provided-buffer ring registration flag (struct io_uring_buf_reg.flags):
 * buffers consumed incrementally (6.12). Newer headers make it an enum,
 * which #ifndef cannot see; liburing.h is included above, so the macro
 * only ever shadows the enum after its declaration, with the same value.
 */
#ifndef IOU_PBUF_RING_INC
#define IOU_PBUF_RING_INC		2U
#endif

#endif
