/* stub.bpf.c: the permanent program attached to a hook.
 *
 * It does one thing: tail-call whatever program sits in slot 0 of its
 * prog array. Replacing a policy's program is then one atomic map update:
 * an event runs either the old program or the new one, never neither, never
 * both. With the slot empty the tail call falls through and nothing happens.
 */
BPF_PROG_ARRAY(slot, 1);

int weir_stub(void *ctx)
{
    slot.call(ctx, 0);
    return 0;
}
