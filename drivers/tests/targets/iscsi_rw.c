/*
 * iscsi_rw: a tiny iSCSI initiator on libiscsi, for the export tests (Debian's libiscsi
 * tools inquire but do not copy data, and qemu's iscsi driver is not packaged here).
 *
 *   iscsi_rw <portal> <target-iqn> <initiator-iqn> <user> <password> write <file>
 *   iscsi_rw <portal> <target-iqn> <initiator-iqn> <user> <password> read <bytes> <file>
 *   iscsi_rw <portal> <target-iqn> <initiator-iqn> <user> <password> hold
 *
 * Logs in to LUN 1 with CHAP (an empty user: none), then writes the file's bytes at LBA 0
 * (padded with zeros to whole blocks), reads <bytes> from LBA 0 into the file, or holds the
 * session: prints "ready", waits for a line on stdin, then reads one block. Errors go
 * to stderr with libiscsi's message (e.g. "Authentication failure"); exit status 0 is
 * success, 3 a failed login, 4 a refused command.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <iscsi/iscsi.h>
#include <iscsi/scsi-lowlevel.h>

static int refused(struct iscsi_context *iscsi, const char *what, struct scsi_task *task)
{
	if (task == NULL) {
		fprintf(stderr, "%s failed: %s\n", what, iscsi_get_error(iscsi));
		return 4;
	}
	if (task->status != SCSI_STATUS_GOOD) {
		fprintf(stderr, "%s refused: %s (sense key %d, %s)\n", what, iscsi_get_error(iscsi),
			task->sense.key, scsi_sense_key_str(task->sense.key));
		scsi_free_scsi_task(task);
		return 4;
	}
	return 0;
}

int main(int argc, char **argv)
{
	if (argc < 7) {
		fprintf(stderr, "usage: %s portal target initiator user password write FILE | read BYTES FILE\n", argv[0]);
		return 2;
	}
	const char *portal = argv[1], *target = argv[2], *initiator = argv[3];
	const char *user = argv[4], *password = argv[5], *op = argv[6];
	const int lun = 1;

	struct iscsi_context *iscsi = iscsi_create_context(initiator);
	if (iscsi == NULL) {
		fprintf(stderr, "cannot create an iSCSI context\n");
		return 2;
	}
	/* A closed session must fail the next command, not be logged in again. */
	iscsi_set_noautoreconnect(iscsi, 1);
	iscsi_set_targetname(iscsi, target);
	iscsi_set_session_type(iscsi, ISCSI_SESSION_NORMAL);
	iscsi_set_header_digest(iscsi, ISCSI_HEADER_DIGEST_NONE_CRC32C);
	if (user[0] != '\0' && iscsi_set_initiator_username_pwd(iscsi, user, password) != 0) {
		fprintf(stderr, "cannot set CHAP: %s\n", iscsi_get_error(iscsi));
		return 2;
	}
	if (iscsi_full_connect_sync(iscsi, portal, lun) != 0) {
		fprintf(stderr, "login failed: %s\n", iscsi_get_error(iscsi));
		iscsi_destroy_context(iscsi);
		return 3;
	}

	struct scsi_task *task = iscsi_readcapacity16_sync(iscsi, lun);
	int rc = refused(iscsi, "READ CAPACITY(16)", task);
	if (rc != 0)
		return rc;
	struct scsi_readcapacity16 *cap = scsi_datain_unmarshall(task);
	if (cap == NULL) {
		fprintf(stderr, "cannot read the capacity\n");
		return 4;
	}
	uint32_t block = cap->block_length;
	scsi_free_scsi_task(task);

	if (strcmp(op, "hold") == 0) {
		char line[16];
		printf("ready\n");
		fflush(stdout);
		if (fgets(line, sizeof(line), stdin) == NULL)
			return 2;
		task = iscsi_read16_sync(iscsi, lun, 0, block, block, 0, 0, 0, 0, 0);
		rc = refused(iscsi, "READ(16)", task);
		if (rc != 0)
			return rc;
		scsi_free_scsi_task(task);
	} else if (strcmp(op, "write") == 0 && argc >= 8) {
		FILE *in = fopen(argv[7], "rb");
		if (in == NULL) {
			perror(argv[7]);
			return 2;
		}
		fseek(in, 0, SEEK_END);
		long size = ftell(in);
		rewind(in);
		uint32_t len = ((uint32_t)size + block - 1) / block * block;
		unsigned char *data = calloc(1, len);
		if (data == NULL || fread(data, 1, size, in) != (size_t)size) {
			fprintf(stderr, "cannot read %s\n", argv[7]);
			return 2;
		}
		fclose(in);
		task = iscsi_write16_sync(iscsi, lun, 0, data, len, block, 0, 0, 0, 0, 0);
		rc = refused(iscsi, "WRITE(16)", task);
		if (rc != 0)
			return rc;
		scsi_free_scsi_task(task);
		free(data);
	} else if (strcmp(op, "read") == 0 && argc >= 9) {
		uint32_t len = (uint32_t)strtoul(argv[7], NULL, 10);
		task = iscsi_read16_sync(iscsi, lun, 0, len, block, 0, 0, 0, 0, 0);
		rc = refused(iscsi, "READ(16)", task);
		if (rc != 0)
			return rc;
		FILE *out = fopen(argv[8], "wb");
		if (out == NULL || fwrite(task->datain.data, 1, task->datain.size, out) != (size_t)task->datain.size) {
			fprintf(stderr, "cannot write %s\n", argv[8]);
			return 2;
		}
		fclose(out);
		scsi_free_scsi_task(task);
	} else {
		fprintf(stderr, "unknown operation %s\n", op);
		return 2;
	}
	iscsi_logout_sync(iscsi);
	iscsi_destroy_context(iscsi);
	return 0;
}
