/*-------------------------------------------------------------------------
 *
 * batpak.c
 *	  Module entry point: refuses to load unless preloaded, defines the
 *	  batpak.* settings, hooks shared memory and registers the writer.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "miscadmin.h"
#include "postmaster/bgworker.h"
#include "storage/ipc.h"
#include "utils/guc.h"

#include "batpak.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

char	   *batpak_database = NULL;
int			batpak_segment_size_kb = BATPAK_DEFAULT_SEGMENT_SIZE_KB;
int			batpak_max_event_size_kb = BATPAK_DEFAULT_MAX_EVENT_KB;
bool		batpak_synchronous_commit = true;
int			batpak_flush_delay_ms = BATPAK_DEFAULT_FLUSH_DELAY_MS;
int			batpak_writer_timeout_ms = BATPAK_DEFAULT_WRITER_TIMEOUT_MS;
bool		batpak_transactional = true;
int			batpak_max_transaction_events = 1000000;
int			batpak_inject_fault = BATPAK_FAULT_NONE;

/* Faults the tests inject (superuser only; see docs/decisions.md) */
static const struct config_enum_entry batpak_fault_options[] = {
	{"none", BATPAK_FAULT_NONE, false},
	{"notify", BATPAK_FAULT_NOTIFY, false},
	{"write", BATPAK_FAULT_WRITE, false},
	{"partial_write", BATPAK_FAULT_PARTIAL_WRITE, false},
	{"fsync", BATPAK_FAULT_FSYNC, false},
	{"enospc", BATPAK_FAULT_ENOSPC, false},
	{"discard_crash", BATPAK_FAULT_DISCARD_CRASH, false},
	{"read_pause", BATPAK_FAULT_READ_PAUSE, false},
	{"xid_status", BATPAK_FAULT_XID_STATUS, false},
	{"answer_pause", BATPAK_FAULT_ANSWER_PAUSE, false},
	{"cancel_after_answer", BATPAK_FAULT_CANCEL_AFTER_ANSWER, false},
	{NULL, 0, false}
};
bool		batpak_loaded = false;

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

static void
batpak_shmem_request_hook(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	batpak_shmem_request();
}

static void
batpak_shmem_startup_hook(void)
{
	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	batpak_shmem_startup();
}

static void
batpak_define_gucs(void)
{
	DefineCustomStringVariable("batpak.database",
							   "Database in which the batpak extension lives and the writer connects.",
							   NULL,
							   &batpak_database,
							   "postgres",
							   PGC_POSTMASTER,
							   GUC_SUPERUSER_ONLY,
							   NULL, NULL, NULL);

	DefineCustomIntVariable("batpak.segment_size",
							"Size at which the writer starts a new segment file.",
							"Takes effect at the next rotation.",
							&batpak_segment_size_kb,
							BATPAK_DEFAULT_SEGMENT_SIZE_KB,
							1024, 1024 * 1024,
							PGC_SIGHUP,
							GUC_UNIT_KB,
							NULL, NULL, NULL);

	DefineCustomIntVariable("batpak.max_event_size",
							"Largest event (coordinates, key, payload and metadata) accepted by append.",
							NULL,
							&batpak_max_event_size_kb,
							BATPAK_DEFAULT_MAX_EVENT_KB,
							1, 256 * 1024,
							PGC_SUSET,
							GUC_UNIT_KB,
							NULL, NULL, NULL);

	DefineCustomBoolVariable("batpak.synchronous_commit",
							 "Whether an append waits until its events are flushed to disk.",
							 "Off returns after the write; the writer syncs within batpak.flush_delay.",
							 &batpak_synchronous_commit,
							 true,
							 PGC_USERSET,
							 0,
							 NULL, NULL, NULL);

	DefineCustomIntVariable("batpak.flush_delay",
							"Longest time the writer leaves asynchronously appended events unsynced.",
							NULL,
							&batpak_flush_delay_ms,
							BATPAK_DEFAULT_FLUSH_DELAY_MS,
							1, 10000,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("batpak.writer_timeout",
							"Longest time an append waits for the writer before failing.",
							NULL,
							&batpak_writer_timeout_ms,
							BATPAK_DEFAULT_WRITER_TIMEOUT_MS,
							100, 3600 * 1000,
							PGC_USERSET,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomBoolVariable("batpak.transactional",
							 "Whether appended events become visible with the transaction that appended them.",
							 "Off: visible to everyone as soon as they are durable, whatever the transaction does.",
							 &batpak_transactional,
							 true,
							 PGC_USERSET,
							 0,
							 NULL, NULL, NULL);

	DefineCustomIntVariable("batpak.max_transaction_events",
							"Most batpak events one transaction may hold pending.",
							"The writer keeps about 160 bytes of memory per pending event until its transaction ends.",
							&batpak_max_transaction_events,
							1000000,
							1,
							INT_MAX,
							PGC_SUSET,
							0,
							NULL, NULL, NULL);

	DefineCustomBoolVariable("batpak.record_denials",
							 "Whether a gate's denial is appended to the entity's stream as a batpak.denial event.",
							 NULL,
							 &batpak_record_denials,
							 false,
							 PGC_SUSET,
							 0,
							 NULL, NULL, NULL);

	DefineCustomStringVariable("batpak.gate_bypass_reason",
							   "Reason for skipping the gates (superusers and members of batpak_admin only).",
							   "Appends made while it is set skip the gates and record the reason and the role in their metadata.",
							   &batpak_gate_bypass_reason,
							   "",
							   PGC_USERSET,
							   0,
							   batpak_gate_bypass_check, batpak_gate_bypass_assign, NULL);

	DefineCustomEnumVariable("batpak.inject_fault",
							 "Makes a batpak process fail on purpose, for tests.",
							 "notify: the notifier's NOTIFY fails as if the notification queue were full. "
							 "write, partial_write, fsync, enospc: the writer's write of a group fails (EIO), "
							 "fails after writing half of it (EIO), its fdatasync fails (EIO), or half is written "
							 "and the disk is full (ENOSPC); set in a session, for the groups holding that "
							 "session's appends, set for the server, for every group. "
							 "discard_crash: the fdatasync fails and the server crashes (PANIC) in the middle "
							 "of discarding what the group wrote. read_pause: the session's reads wait for "
							 "pg_advisory_lock(108170704871787) to be free before each frame they read. "
							 "xid_status: the writer's look-up of a transaction's status fails while it holds "
							 "the clog truncation lock. answer_pause: the writer writes the session's append, "
							 "then holds its answer until the session gives up waiting (cancel, "
							 "statement_timeout, writer_timeout), at most 60 s; set for the server, every "
							 "session's appends are held. cancel_after_answer: the session acts "
							 "on a query cancel that arrives just after the writer answered its append.",
							 &batpak_inject_fault,
							 BATPAK_FAULT_NONE,
							 batpak_fault_options,
							 PGC_SUSET,
							 GUC_NOT_IN_SAMPLE,
							 NULL, NULL, NULL);

	MarkGUCPrefixReserved("batpak");
}

static void
batpak_register_workers(void)
{
	BackgroundWorker worker;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = 2;
	strlcpy(worker.bgw_library_name, "batpak", BGW_MAXLEN);
	strlcpy(worker.bgw_function_name, "batpak_writer_main", BGW_MAXLEN);
	strlcpy(worker.bgw_name, "batpak writer", BGW_MAXLEN);
	strlcpy(worker.bgw_type, "batpak writer", BGW_MAXLEN);
	RegisterBackgroundWorker(&worker);

	/* the notifier: NOTIFY batpak when events become visible (notify.c) */
	worker.bgw_restart_time = 1;
	strlcpy(worker.bgw_function_name, "batpak_notifier_main", BGW_MAXLEN);
	strlcpy(worker.bgw_name, "batpak notifier", BGW_MAXLEN);
	strlcpy(worker.bgw_type, "batpak notifier", BGW_MAXLEN);
	RegisterBackgroundWorker(&worker);
}

void
_PG_init(void)
{
	/*
	 * The writer and the shared memory it needs can only be set up by the
	 * postmaster, so a library loaded later (by CREATE EXTENSION or a
	 * function call) is useless and would mislead: refuse, as pg_cron does.
	 */
	if (!process_shared_preload_libraries_in_progress)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("batpak can only be loaded via shared_preload_libraries"),
				 errhint("Add batpak to the shared_preload_libraries configuration variable in postgresql.conf and restart the server.")));

	batpak_define_gucs();
	batpak_crc_init();

	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = batpak_shmem_request_hook;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = batpak_shmem_startup_hook;

	batpak_register_workers();
	batpak_loaded = true;
}
