/* A pack in steps (scan, plan, write, finalize; include/prepack.h and
 * docs/SCALE.md): what the steps share. Every step's files live in
 * DIR/.prepack-job until finalize writes the manifest and removes it. */
#ifndef PP_STEPS_JOB_H
#define PP_STEPS_JOB_H

#include <stddef.h>
#include <stdint.h>

#include "steps/record.h"
#include "ingest/readers.h"
#include "shards/manifest.h"
#include "prepack.h"

#define PP_JOB_DIR ".prepack-job"

/* The job directory (DIR/.prepack-job): where the steps hand records to
 * each other, opened with the options and keys of the job it holds. */
typedef struct pp_job {
    const char *dir;
    char job_dir[4096];
    /* DIR and DIR/.prepack-job opened once (O_NOFOLLOW | O_DIRECTORY):
     * every job file is created, read, renamed and removed relative to
     * them, so a link planted in their place is refused, never followed.
     * -1: not there (yet). lock_fd: the step's lock (pp_job_lock). */
    int dir_fd, job_fd, lock_fd;
    char lock_name[64];
    const prepack_step_options *o;
    uint64_t scan_key; /* inputs, how they are read, the dtype */
    uint64_t plan_key; /* scan_key and the plan and shard layout */
    uint64_t shard_rows;
} pp_job;

/* Checks the options and derives the keys; opens DIR and the job
 * directory (a symbolic link in the place of either is refused); create:
 * makes them first. pp_job_close closes what it opened (and the lock). */
int pp_job_open(pp_job *j, const char *dir, const prepack_step_options *o,
                int create, prepack_diag *diag);
void pp_job_close(pp_job *j);
/* Takes the step's exclusive lock, the job file NAME (flock): a second
 * run of the same task is refused ("another run holds WHO") rather than
 * let the two remove each other's files. */
int pp_job_lock(pp_job *j, const char *name, const char *who,
                prepack_diag *diag);
/* DIR/.prepack-job/NAME into out (for messages: files are opened
 * relative to job_fd). */
void pp_job_file(const pp_job *j, char *out, size_t cap, const char *name);
/* Whether DIR is a finished set: manifest.json and no job directory. */
int pp_job_finished(const pp_job *j);

/* What every step (prepack_step_*) starts with: the caller's result and
 * diag, or the step's own when they pass NULL, both cleared; the task
 * count checked (count_of names the step whose tasks are counted, for
 * plan and finalize; NULL for a task with an index, which must be below
 * ntasks); the job opened. When DIR already holds the finished set,
 * res->already_done is set and the step has nothing to do. */
typedef struct pp_step {
    prepack_step_result *res;
    prepack_diag *diag;
    prepack_step_result own_res;
    prepack_diag own_diag;
} pp_step;

int pp_step_begin(pp_step *s, pp_job *j, const char *dir,
                  const prepack_step_options *o, prepack_step_result *res,
                  prepack_diag *diag, const char *count_of, uint32_t task,
                  uint32_t ntasks);
/* Removes the files of the job directory whose names start with prefix
 * and that the job itself makes (scan-T.*, plan.*, write-T-of-M.meta,
 * their temporaries, the token store's kept files), never another entry
 * and never through a link; the locks stay. pp_job_remove_all: every
 * such file, the locks too, then the directory if that left it empty. */
void pp_job_remove(const pp_job *j, const char *prefix);
void pp_job_remove_all(pp_job *j);
/* The file the tasks read of input i in place: the input, or its .bin
 * for Megatron (as the readers derive it). */
void pp_job_input_file(const pp_job *j, uint32_t i, uint32_t format, char *out,
                       size_t cap);

/* ---- partition: which part of which input scan task t of n reads -------- */

/* One input as the partition weighs it. */
typedef struct pp_unit {
    prepack_format format;
    uint64_t weight; /* bytes: the file's, the .bin's for Megatron */
    int split;       /* 0 whole, 1 bytes (plain JSONL, llm.c, raw),
                         2 Megatron sequences */
    uint64_t count;  /* Megatron: sequences in the .idx */
    uint64_t at;     /* the sum of the weights before it */
} pp_unit;

/* The units of every input (detecting formats as prepack_ingest_file
 * does); *total = the sum of the weights. */
int pp_step_units(const pp_job *j, pp_unit *units, uint64_t *total,
                  prepack_diag *diag);
/* Whether task t of n reads part of input i, and which. */
int pp_step_part(const pp_unit *u, uint64_t total, uint32_t t, uint32_t n,
                 pp_input_part *part);

/* ---- a scan task's result ---------------------------------------------------- */

typedef struct pp_scan_part {
    uint32_t input, format;
    uint64_t sequences, tokens, documents, partial;
    uint64_t sequences_total, bin_reached, bin_size; /* Megatron */
    /* JSONL: the first and last records' group values (NULL: none), to
     * join a group cut between two tasks */
    char *first_group, *last_group;
    size_t first_group_len, last_group_len;
} pp_scan_part;

/* Where a task's sequences' tokens are: source 0 is the task's own token
 * file (text inputs, parsed); the others are input files read in place. */
typedef struct pp_scan_source {
    uint32_t width, is_signed;
    uint64_t size;
    uint64_t stamp; /* own files: xxh64; inputs: mtime in ns */
    /* source 0: the task's scan-T.tokens (named by the task number, no
     * path). Others: the INPUT given on the command line with this index
     * (pp_job_input_file), never a path read from the record; the write
     * tasks check its inode too, through the descriptor they map (dev is
     * kept for a reader of the record: a shared file system's device
     * number differs between nodes). */
    uint32_t input;
    uint64_t dev, ino;
} pp_scan_source;

typedef struct pp_scan_meta {
    uint64_t key;
    uint32_t task, ntasks;
    uint64_t sequences, tokens;
    uint32_t max_id, has_mask;
    uint64_t lengths_hash, locs_size, locs_hash, mask_size, mask_hash;
    uint32_t nparts, nsources;
    pp_scan_part *parts;
    pp_scan_source *sources;
    uint64_t njoins;
    uint64_t *joins; /* the task's sequences (its own ids) that join the
                        one before them: groups */
} pp_scan_meta;

/* Location records in scan-N.locs: u32 source, u64 byte offset. */
enum { PP_LOC_BYTES = 12 };

void pp_scan_meta_visit(pp_rec *r, pp_scan_meta *m);
void pp_scan_meta_free(pp_scan_meta *m);
/* What is wrong with a record read back (its fields against each other
 * and the job's ninputs), or NULL. */
const char *pp_scan_meta_fault(const pp_scan_meta *m, uint32_t ninputs);
/* Loads and checks scan task t's result; a missing or damaged one is an
 * error naming the task to rerun. */
int pp_scan_meta_load(const pp_job *j, uint32_t t, uint32_t n, pp_scan_meta *m,
                      prepack_diag *diag);
void pp_scan_name(char *out, size_t cap, uint32_t t, const char *ext);

/* ---- the plan ---------------------------------------------------------------- */

typedef struct pp_plan_meta {
    uint64_t key;
    uint32_t scan_tasks;
    uint32_t max_seq_len, dtype, has_mask, has_offsets, rows_per_frame;
    int32_t level;
    uint64_t shard_rows, rows, items, shards, sequences;
    uint64_t *scan_first; /* [scan_tasks + 1]: first id of each task */
    uint32_t ninputs;
    prepack_input_info *inputs; /* paths owned (malloc) */
    prepack_report report;
    uint64_t *shard_offset; /* [shards + 1]: bytes into plan.rows */
    uint64_t *shard_hash;   /* [shards] */
} pp_plan_meta;

void pp_plan_meta_visit(pp_rec *r, pp_plan_meta *m);
void pp_plan_meta_free(pp_plan_meta *m);
int pp_plan_meta_load(const pp_job *j, pp_plan_meta *m, prepack_diag *diag);

/* The shards write task t of n writes: [*first, *end). */
void pp_step_shards_of(uint64_t shards, uint32_t t, uint32_t n, uint64_t *first,
                       uint64_t *end);
void pp_write_name(char *out, size_t cap, uint32_t t, uint32_t n);

/* ---- a write task's result: the shards it wrote ---------------------------- */

typedef struct pp_write_meta {
    uint64_t key;
    uint32_t task, ntasks, rows_per_frame;
    uint64_t first, count;
    pp_shard_info *shards; /* [count] */
} pp_write_meta;

void pp_write_meta_visit(pp_rec *r, pp_write_meta *m);
/* Loads write task t of n's record and checks it against the plan (its
 * key, its shards' numbers and names, rows at most shard_rows each): a
 * missing one sets *missing; either fails naming the task to rerun.
 * Frees nothing on failure the caller must. */
int pp_write_meta_load(const pp_job *j, uint32_t t, uint32_t n, uint64_t shards,
                       uint64_t shard_rows, pp_write_meta *m, int *missing,
                       prepack_diag *diag);
/* Whether DIR/s->file has s->bytes bytes (and, with hash, s->xxh64):
 * a regular file, not a link. */
int pp_job_shard_good(const pp_job *j, const pp_shard_info *s, int hash);
/* Write task t's lock name. */
void pp_write_lock_name(char *out, size_t cap, uint32_t t, uint32_t n);

#endif
